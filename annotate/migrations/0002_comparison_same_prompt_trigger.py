"""A comparison's two responses must answer the comparison's prompt.

This spans two tables, which a CHECK constraint cannot express, so a trigger enforces it on every
insert and update, from any client (shell, commands, workers). It raises an integrity error.
"""

from django.db import migrations

SQLITE = [
    f"""
    CREATE TRIGGER annotate_comparison_same_prompt_{event.lower()}
    BEFORE {event} ON annotate_comparison
    FOR EACH ROW WHEN
        (SELECT prompt_id FROM generation_response WHERE id = NEW.response_a_id) IS NOT NEW.prompt_id
        OR (SELECT prompt_id FROM generation_response WHERE id = NEW.response_b_id) IS NOT NEW.prompt_id
    BEGIN
        SELECT RAISE(ABORT, 'comparison_responses_share_prompt: both responses must answer the prompt');
    END;
    """
    for event in ("INSERT", "UPDATE")
]
SQLITE_DROP = [
    "DROP TRIGGER IF EXISTS annotate_comparison_same_prompt_insert;",
    "DROP TRIGGER IF EXISTS annotate_comparison_same_prompt_update;",
]

POSTGRES = [
    """
    CREATE FUNCTION annotate_comparison_same_prompt() RETURNS trigger AS $$
    BEGIN
        IF (SELECT prompt_id FROM generation_response WHERE id = NEW.response_a_id) IS DISTINCT FROM NEW.prompt_id
           OR (SELECT prompt_id FROM generation_response WHERE id = NEW.response_b_id)
              IS DISTINCT FROM NEW.prompt_id THEN
            RAISE EXCEPTION 'comparison_responses_share_prompt: both responses must answer the prompt'
                USING ERRCODE = 'check_violation';
        END IF;
        RETURN NEW;
    END;
    $$ LANGUAGE plpgsql;
    """,
    """
    CREATE TRIGGER annotate_comparison_same_prompt
    BEFORE INSERT OR UPDATE ON annotate_comparison
    FOR EACH ROW EXECUTE FUNCTION annotate_comparison_same_prompt();
    """,
]
POSTGRES_DROP = [
    "DROP TRIGGER IF EXISTS annotate_comparison_same_prompt ON annotate_comparison;",
    "DROP FUNCTION IF EXISTS annotate_comparison_same_prompt();",
]


def _run(statements_by_vendor):
    def apply(apps, schema_editor):
        statements = statements_by_vendor.get(schema_editor.connection.vendor)
        if statements is None:
            raise RuntimeError(f"no same-prompt trigger for database vendor {schema_editor.connection.vendor!r}")
        for statement in statements:
            schema_editor.execute(statement)

    return apply


class Migration(migrations.Migration):
    dependencies = [("annotate", "0001_initial")]

    operations = [
        migrations.RunPython(
            _run({"sqlite": SQLITE, "postgresql": POSTGRES}),
            _run({"sqlite": SQLITE_DROP, "postgresql": POSTGRES_DROP}),
        ),
    ]
