"""Fuzzing the API from its own schema (schemathesis): every operation, a bounded number of generated
requests each, as staff (who can reach every operation) through the WSGI app. No request may get a
server error. (Hypothesis drives each operation's strategy directly: schemathesis' pytest plugin
does not run under this pytest.)"""

import pytest
import schemathesis
from django.urls import resolve
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, given, settings
from rest_framework.authtoken.models import Token

from config.wsgi import application
from tests.factories import ComparisonFactory, JudgmentFactory, PolicyFactory, UserFactory

EXAMPLES = 40  # per operation


def operations():
    schema = schemathesis.openapi.from_dict(SchemaGenerator().get_schema(request=None, public=True))
    schema.app = application
    return [result.ok() for result in schema.get_all_operations()]


@pytest.fixture
def staff_token(db):
    staff = UserFactory(username="fuzz-staff", is_staff=True, is_superuser=True)
    ComparisonFactory()
    JudgmentFactory()
    PolicyFactory(held_back=True, held_back_reason="fluency")
    return Token.objects.create(user=staff).key


def test_the_schema_covers_every_api_route_of_the_permission_table():
    from tests.test_permissions import TABLE

    routes = {
        (method.upper(), name)
        for name, methods in TABLE.items()
        if name.startswith("api:")
        for method in methods
    }
    routes -= {("GET", "api:schema"), ("GET", "api:docs")}  # the schema itself and its viewer
    described = set()
    for operation in operations():
        name = resolve(operation.path.replace("{id}", "1")).view_name
        described.add((operation.method.upper(), name))
    assert described == routes


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_no_request_gets_a_server_error(staff_token):
    import traceback

    from django.core.signals import got_request_exception

    raised: list[str] = []

    def record(sender, request=None, **kwargs):  # the exception behind a 500, for the report
        raised.append(traceback.format_exc(limit=-6))

    got_request_exception.connect(record)
    failures: list[str] = []
    seen: dict[int, int] = {}
    for operation in operations():

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def call(case):
            response = case.call(headers={"Authorization": f"Token {staff_token}"})
            seen[response.status_code] = seen.get(response.status_code, 0) + 1
            if response.status_code >= 500:
                cause = raised[-1] if raised else ""
                failures.append(
                    f"{case.method} {case.formatted_path} {case.query or ''} {case.body!r:.300}: {response.status_code}\n{cause}"
                )

        call()
    got_request_exception.disconnect(record)
    assert failures == [], "\n".join(failures)
    assert sum(n for status, n in seen.items() if status < 300) > len(operations()), (
        seen
    )  # authenticated, served
