"""Routes: CEL matching over attributes and nested data, parameter templates, explain, load-time checks.

The events follow the Harbor CloudEvents format documented in ../shared/reference/formats.md section 1
(type ``harbor.artifact.pushed``, source ``/projects/{id}/webhook/policies/{id}``, data = the Default
payload's ``event_data``, extension ``operator``).
"""

from __future__ import annotations

from typing import Any

import pytest

import glue
from glue import handlers, routing, settings

from .conftest import cloudevent


def pushed(namespace: str = "team-a", name: str = "api", tag: str = "v1.2.0", **extra: Any) -> Any:
    return cloudevent(
        "6a1e3c1f-0c1b-4c0e-9a51-2b8f0c5d7e11",
        type="harbor.artifact.pushed",
        source="/projects/3/webhook/policies/7",
        operator="robot$ci",
        data={
            "resources": [
                {
                    "digest": "sha256:5f0f1e",
                    "tag": tag,
                    "resource_url": f"harbor.example.com/{namespace}/{name}:{tag}",
                }
            ],
            "repository": {
                "name": name,
                "namespace": namespace,
                "repo_full_name": f"{namespace}/{name}",
                "repo_type": "private",
            },
        },
        **extra,
    )


class Deploy(glue.Params):
    namespace: str
    name: str
    replicas: int = 1
    labels: dict[str, str] = {}


@pytest.fixture
def registry() -> handlers.Registry:
    registry = handlers.Registry()

    @glue.handler("deploy", params=Deploy, registry=registry)
    async def deploy(**_: Any) -> None:
        return None

    return registry


def router(registry: handlers.Registry, *routes: dict[str, Any]) -> routing.Router:
    return routing.load(list(routes), registry)


def one(registry: handlers.Registry, match: str, **route: Any) -> routing.Decision:
    r = router(registry, {"name": "r", "handler": "deploy", "match": match, **route})
    (decision,) = r.decide(pushed(), explain=True)
    return decision


PARAMS = {"namespace": "{{ data.repository.namespace }}", "name": "{{ data.repository.name }}"}


@pytest.mark.parametrize(
    ("match", "matched"),
    [
        ('type == "harbor.artifact.pushed"', True),
        ('source.startsWith("/projects/3/")', True),
        ('operator == "robot$ci"', True),  # an extension attribute
        ("subject == null", True),  # optional attributes the event lacks are null
        ('data.repository.namespace == "team-a"', True),
        ('data.resources.exists(r, r.tag.matches("^v[0-9]+"))', True),
        ('data.repository.repo_type in ["public"]', False),
        ('type == "harbor.artifact.pushed" && data.repository.name == "web"', False),
        ("has(data.repository.date_created)", False),
    ],
)
def test_match_over_attributes_and_nested_data(
    registry: handlers.Registry, match: str, matched: bool
) -> None:
    decision = one(registry, match, params=PARAMS)
    assert decision.matched is matched
    assert decision.error is None


def test_explain_names_the_false_condition_and_the_values_it_saw(registry: handlers.Registry) -> None:
    decision = one(
        registry,
        'type == "harbor.artifact.pushed"'
        ' && (data.repository.namespace == "team-b" || size(data.resources) > 3)'
        ' && data.resources[0].tag.startsWith("v")',
        params=PARAMS,
    )
    assert not decision.matched
    assert decision.condition == 'data.repository.namespace == "team-b" || size(data.resources) > 3'
    assert decision.values["data.repository.namespace"] == "team-a"
    assert len(decision.values["data.resources"]) == 1
    assert decision.to_dict()["values"]["data.repository.namespace"] == "team-a"


def test_explain_goes_down_to_the_leaf_of_nested_conjunctions(registry: handlers.Registry) -> None:
    decision = one(registry, '(type != "" && (operator == "admin" && true))', params=PARAMS)
    assert decision.condition == 'operator == "admin"'
    assert dict(decision.values) == {"operator": "robot$ci"}


def test_a_missing_field_is_a_non_match_with_the_reason(registry: handlers.Registry) -> None:
    decision = one(registry, 'data.repository.owner == "me"', params=PARAMS)
    assert not decision.matched
    assert decision.error == "no field 'owner'"
    assert str(decision.values["data.repository.owner"]) == "<no field 'owner'>"


def test_a_non_bool_match_is_reported(registry: handlers.Registry) -> None:
    decision = one(registry, "data.repository.name", params=PARAMS)
    assert not decision.matched and decision.error == "match must yield a bool, got str"


def test_params_render_from_the_event_and_are_validated(registry: handlers.Registry) -> None:
    params = {
        **PARAMS,
        "replicas": "{{ data.resources | length + 1 }}",
        "labels": {"tag": "{{ data.resources[0].tag }}"},
    }
    decision = one(registry, "true", params=params, orderingKey="{{ data.repository.repo_full_name }}")
    assert decision.matched and decision.params_error is None
    assert decision.params == {
        "namespace": "team-a",
        "name": "api",
        "replicas": 2,
        "labels": {"tag": "v1.2.0"},
    }
    assert decision.ordering_key == "team-a/api"


@pytest.mark.parametrize(
    ("params", "error"),
    [
        (
            {**PARAMS, "name": "{{ data.repository.owner }}"},
            "params.name: template: 'dict object' has no attribute 'owner'",
        ),
        (
            {**PARAMS, "replicas": "{{ data.repository.name }}"},
            "params.replicas: Input should be a valid integer",
        ),
        ({**PARAMS, "name": "{{ ''.__class__.__mro__ }}"}, "params.name: template:"),
        ({**PARAMS, "name": "{{ 1 / 0 }}"}, "params.name: template: ZeroDivisionError"),
    ],
)
def test_params_errors_are_reported_not_raised(
    registry: handlers.Registry, params: dict[str, Any], error: str
) -> None:
    decision = one(registry, "true", params=params)
    assert decision.matched
    assert decision.params is None
    assert decision.params_error is not None and decision.params_error.startswith(error), (
        decision.params_error
    )


def test_load_reports_every_problem_with_its_place(registry: handlers.Registry) -> None:
    with pytest.raises(settings.ConfigError) as caught:
        routing.load(
            [
                {"name": "bad-cel", "handler": "deploy", "match": "type ==", "params": PARAMS},
                {"name": "no-handler", "handler": "kubernetes.nope"},
                {"name": "extra", "handler": "deploy", "params": {**PARAMS, "namespaces": "x"}},
                {"name": "missing", "handler": "deploy", "params": {"name": "x"}},
                {"name": "syntax", "handler": "deploy", "params": {**PARAMS, "name": "{{ data.x "}},
                {"name": "extra", "handler": "deploy", "params": PARAMS},
                {"name": "policy", "handler": "deploy", "params": PARAMS, "delivery": {"attempts": 0}},
                {"name": "Bad Name", "handler": "deploy", "params": PARAMS},
            ],
            registry,
            source="glue.yaml",
        )
    problems = dict(caught.value.problems)
    assert problems["routes[0] (bad-cel).match"].startswith("not valid CEL: ")
    assert problems["routes[1] (no-handler).handler"] == "unknown handler 'kubernetes.nope' (known: deploy)"
    assert problems["routes[2] (extra).params.namespaces"] == "not a parameter of handler 'deploy'"
    assert problems["routes[3] (missing).params.namespace"] == "required by handler 'deploy'"
    assert problems["routes[4] (syntax).params"].startswith("template syntax: ")
    assert problems["routes[5] (extra).name"] == "another route has this name"
    assert problems["routes[6].delivery.attempts"] == "Input should be greater than or equal to 1"
    assert "routes[7].name" in problems
    assert str(caught.value).startswith("glue.yaml: routes[0] (bad-cel).match: not valid CEL")


def test_disabled_routes_are_decided_but_not_invoked(registry: handlers.Registry) -> None:
    r = router(registry, {"name": "off", "handler": "deploy", "params": PARAMS, "enabled": False})
    (decision,) = r.decide(pushed())
    assert decision.matched and not decision.enabled
