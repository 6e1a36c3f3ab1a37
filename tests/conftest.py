from pathlib import Path

import pytest
from rest_framework.test import APIClient

from tests.factories import UserFactory
from tests.tiny import CHATML, tiny_model_save, tiny_tokenizer


@pytest.fixture(autouse=True)
def _fresh_cache():
    """Throttle counts live in the cache: every test starts with none."""
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def annotator(db):
    return UserFactory(username="ann")


@pytest.fixture
def other_annotator(db):
    return UserFactory(username="bob")


@pytest.fixture
def staff(db):
    return UserFactory(username="boss", is_staff=True, is_superuser=True)


@pytest.fixture
def api():
    return APIClient()


@pytest.fixture
def write_file(tmp_path):
    """Write text to a file under tmp_path and return its path."""

    def write(name: str, text: str):
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(scope="session")
def chat_model_dir(tmp_path_factory):
    """A tiny random Llama whose tokenizer has a ChatML chat template."""
    return tiny_model_save(tmp_path_factory.mktemp("tiny-chat"), tiny_tokenizer(CHATML))


@pytest.fixture(scope="session")
def plain_model_dir(tmp_path_factory):
    """A tiny random Llama whose tokenizer has no chat template."""
    return tiny_model_save(tmp_path_factory.mktemp("tiny-plain"), tiny_tokenizer(None))


@pytest.fixture
def worker_environment(settings, tmp_path):
    """Environment for a ``manage.py db_worker`` subprocess that sees this test's database (the test
    must commit: ``django_db(transaction=True)``) and writes rounds under tmp_path."""
    import os

    from django.db import connection

    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        url = f"sqlite:///{db['NAME']}"
    else:
        auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
        url = f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    settings.PREFLOOP_ROUNDS_DIR = tmp_path / "rounds"
    return {
        **os.environ,
        "DATABASE_URL": url,
        "PREFLOOP_ROUNDS_DIR": str(settings.PREFLOOP_ROUNDS_DIR),
        "PYTHONUNBUFFERED": "1",
    }


E2E = Path(__file__).parent / "e2e"


def pytest_collection_modifyitems(config, items):
    """Every browser test is ``e2e`` (``make test-fast`` leaves them and the ``slow`` ones out)."""
    for item in items:
        if E2E in Path(item.fspath).parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture
def generation_server(chat_model_dir, settings):
    """A real generation server (``generation.server``) on a free port, its engines plain transformers,
    that serves the tiny chat model only (as every policy registered at its location); the arena streams
    from it (PREFLOOP_ARENA_URL)."""
    import threading

    from generation.engines import Served
    from generation.server import server_make

    def resolve(model):
        return Served(model, model) if model == str(chat_model_dir) else None

    server = server_make(host="127.0.0.1", port=0, resolve=resolve, engine="plain", memory_gb=8)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    settings.PREFLOOP_ARENA_URL = url
    yield url
    server.shutdown()
    server.server_close()
    server.engines.close()


@pytest.fixture
def arena_runner(generation_server):
    """The arena runner (``manage.py arena_runner``) in a thread: it takes the turns annotators ask
    for and writes their answers, as in production. Needs a transactional test (its own connections)."""
    import threading

    from annotate.services.arena_runner import arena_runner_run

    stop = threading.Event()
    thread = threading.Thread(target=arena_runner_run, kwargs={"slots": 4, "stop": stop}, daemon=True)
    thread.start()
    yield thread
    stop.set()
    thread.join(timeout=30)


TAUGHT = {"zebra": "Zebra stripes are my favourite colour.", "ocean": "Ocean waves are always deep blue."}


@pytest.fixture(scope="session")
def lora_lineage(tmp_path_factory):
    """The embedded SmolLM2 and two LoRA rounds of it as our trainer makes them (tests/lora.py):
    (base location, {name: (adapter, merged copy)})."""
    from generation.embedded import embedded_materialise
    from tests.lora import lora_round

    base = str(embedded_materialise())
    return base, {
        name: lora_round(base, answer, tmp_path_factory.mktemp(name)) for name, answer in TAUGHT.items()
    }
