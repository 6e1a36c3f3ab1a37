from annotate.management.importing import JudgedImportCommand
from annotate.preference_files import preference_drafts_read
from annotate.services.imports import preferences_import


class Command(JudgedImportCommand):
    help = (
        "Import existing preference pairs (JSONL: prompt/chosen/rejected, prompt/preferred/dispreferred, "
        "or conversational chosen/rejected message lists) as comparisons of a campaign, each with an "
        "imported judgment. All or nothing: any bad line stops the import and every bad line is reported."
    )
    drafts_read = staticmethod(preference_drafts_read)
    importer = staticmethod(preferences_import)
