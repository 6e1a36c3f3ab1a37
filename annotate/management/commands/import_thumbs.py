from annotate.management.importing import JudgedImportCommand
from annotate.models import Task
from annotate.preference_files import thumbs_drafts_read
from annotate.services.imports import thumbs_import


class Command(JudgedImportCommand):
    help = (
        "Import an existing thumbs log (JSONL: prompt, completion, label true/false: TRL's unpaired "
        "format, standard or conversational) as thumbs items of a thumbs campaign, each with an imported "
        "judgment (good or bad). All or nothing: any bad line stops the import and every bad line is "
        "reported."
    )
    drafts_read = staticmethod(thumbs_drafts_read)
    importer = staticmethod(thumbs_import)
    task = Task.THUMBS
    campaign_default = "imported thumbs"
    items = "thumbs"
    duplicates = "duplicates"
