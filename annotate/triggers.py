"""The trigger that enforces "a comparison's two responses answer its prompt" (a thumbs item has one,
a ranking item three or four).

This spans two tables, which a CHECK constraint cannot express. The trigger is installed after every
``migrate`` (post_migrate) and removed before it (pre_migrate): SQLite rebuilds a table to alter it,
and a trigger naming the table being rebuilt would make that fail, or be dropped with the old table.
Installing is idempotent. A violation raises an integrity error on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

from django.db.backends.base.base import BaseDatabaseWrapper

TABLES = {"annotate_comparison", "generation_response"}

SQLITE_INSTALL = [
    f"""
    CREATE TRIGGER IF NOT EXISTS annotate_comparison_same_prompt_{event.lower()}
    BEFORE {event} ON annotate_comparison
    FOR EACH ROW WHEN
        (SELECT prompt_id FROM generation_response WHERE id = NEW.response_a_id) IS NOT NEW.prompt_id
        OR (NEW.response_b_id IS NOT NULL
            AND (SELECT prompt_id FROM generation_response WHERE id = NEW.response_b_id) IS NOT NEW.prompt_id)
        OR (NEW.response_c_id IS NOT NULL
            AND (SELECT prompt_id FROM generation_response WHERE id = NEW.response_c_id) IS NOT NEW.prompt_id)
        OR (NEW.response_d_id IS NOT NULL
            AND (SELECT prompt_id FROM generation_response WHERE id = NEW.response_d_id) IS NOT NEW.prompt_id)
    BEGIN
        SELECT RAISE(ABORT, 'comparison_responses_share_prompt: both responses must answer the prompt');
    END;
    """
    for event in ("INSERT", "UPDATE")
]
SQLITE_REMOVE = [
    "DROP TRIGGER IF EXISTS annotate_comparison_same_prompt_insert;",
    "DROP TRIGGER IF EXISTS annotate_comparison_same_prompt_update;",
]
POSTGRES_INSTALL = [
    """
    CREATE OR REPLACE FUNCTION annotate_comparison_same_prompt() RETURNS trigger AS $$
    BEGIN
        IF (SELECT prompt_id FROM generation_response WHERE id = NEW.response_a_id) IS DISTINCT FROM NEW.prompt_id
           OR (NEW.response_b_id IS NOT NULL
               AND (SELECT prompt_id FROM generation_response WHERE id = NEW.response_b_id)
                   IS DISTINCT FROM NEW.prompt_id)
           OR (NEW.response_c_id IS NOT NULL
               AND (SELECT prompt_id FROM generation_response WHERE id = NEW.response_c_id)
                   IS DISTINCT FROM NEW.prompt_id)
           OR (NEW.response_d_id IS NOT NULL
               AND (SELECT prompt_id FROM generation_response WHERE id = NEW.response_d_id)
                   IS DISTINCT FROM NEW.prompt_id) THEN
            RAISE EXCEPTION 'comparison_responses_share_prompt: both responses must answer the prompt'
                USING ERRCODE = 'check_violation';
        END IF;
        RETURN NEW;
    END;
    $$ LANGUAGE plpgsql;
    """,
    "DROP TRIGGER IF EXISTS annotate_comparison_same_prompt ON annotate_comparison;",
    """
    CREATE TRIGGER annotate_comparison_same_prompt
    BEFORE INSERT OR UPDATE ON annotate_comparison
    FOR EACH ROW EXECUTE FUNCTION annotate_comparison_same_prompt();
    """,
]
POSTGRES_REMOVE = ["DROP TRIGGER IF EXISTS annotate_comparison_same_prompt ON annotate_comparison;"]

STATEMENTS = {
    "sqlite": (SQLITE_INSTALL, SQLITE_REMOVE),
    "postgresql": (POSTGRES_INSTALL, POSTGRES_REMOVE),
}


def _run(connection: BaseDatabaseWrapper, install: bool) -> None:
    if connection.vendor not in STATEMENTS:
        raise RuntimeError(f"no same-prompt trigger for database vendor {connection.vendor!r}")
    if not TABLES <= set(connection.introspection.table_names()):
        return  # before the first migration: nothing to install on or remove from
    statements = STATEMENTS[connection.vendor][0 if install else 1]
    with connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)


def triggers_install(*, connection: BaseDatabaseWrapper) -> None:
    _run(connection, install=True)


def triggers_remove(*, connection: BaseDatabaseWrapper) -> None:
    _run(connection, install=False)
