"""Routes: CEL matching over attributes and nested data, parameter templates, explain, load-time checks.

The events follow the Harbor CloudEvents format documented in ../shared/reference/formats.md section 1
(type ``harbor.artifact.pushed``, source ``/projects/{id}/webhook/policies/{id}``, data = the Default
payload's ``event_data``, extension ``operator``).
"""

from __future__ import annotations

import datetime
from typing import Any

import cel
import pytest

import glue
from glue import contract, routing, settings
from tests.support import cloudevent


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
def registry() -> contract.Registry:
    registry = contract.Registry()

    @glue.handler("deploy", params=Deploy, registry=registry)
    async def deploy(**_: Any) -> None:
        return None

    return registry


def router(registry: contract.Registry, *routes: dict[str, Any]) -> routing.Router:
    return routing.load(list(routes), registry)


def one(registry: contract.Registry, match: str, **route: Any) -> routing.Decision:
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
    registry: contract.Registry, match: str, matched: bool
) -> None:
    decision = one(registry, match, params=PARAMS)
    assert decision.matched is matched
    assert decision.error is None


def test_explain_names_the_false_condition_and_the_values_it_saw(registry: contract.Registry) -> None:
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


def test_explain_goes_down_to_the_leaf_of_nested_conjunctions(registry: contract.Registry) -> None:
    decision = one(registry, '(type != "" && (operator == "admin" && true))', params=PARAMS)
    assert decision.condition == 'operator == "admin"'
    assert dict(decision.values) == {"operator": "robot$ci"}


def test_a_missing_field_is_a_non_match_with_the_reason(registry: contract.Registry) -> None:
    decision = one(registry, 'data.repository.owner == "me"', params=PARAMS)
    assert not decision.matched
    assert decision.error == "no field 'owner'"
    assert str(decision.values["data.repository.owner"]) == "<no field 'owner'>"


def test_a_non_bool_match_is_reported(registry: contract.Registry) -> None:
    decision = one(registry, "data.repository.name", params=PARAMS)
    assert not decision.matched and decision.error == "match must yield a bool, got str"


def test_params_render_from_the_event_and_are_validated(registry: contract.Registry) -> None:
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
    registry: contract.Registry, params: dict[str, Any], error: str
) -> None:
    decision = one(registry, "true", params=params)
    assert decision.matched
    assert decision.params is None
    assert decision.params_error is not None and decision.params_error.startswith(error), (
        decision.params_error
    )


def test_load_reports_every_problem_with_its_place(registry: contract.Registry) -> None:
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


def test_disabled_routes_are_decided_but_not_invoked(registry: contract.Registry) -> None:
    r = router(registry, {"name": "off", "handler": "deploy", "params": PARAMS, "enabled": False})
    (decision,) = r.decide(pushed())
    assert decision.matched and not decision.enabled


class Native(glue.Params):
    endpoints: list[dict[str, Any]] = []
    value: Any = None
    text: str = ""


@pytest.fixture
def native_registry() -> contract.Registry:
    registry = contract.Registry()

    @glue.handler("native", params=Native, registry=registry)
    async def native(**_: Any) -> None:
        return None

    return registry


def rendered(registry: contract.Registry, params: dict[str, Any], **attributes: Any) -> routing.Decision:
    endpoints = [
        {"dnsName": "api.example.com", "recordType": "A", "targets": ["10.0.0.7"]},
        {"dnsName": "www.example.com", "recordType": "CNAME", "targets": ["api.example.com"]},
    ]
    event = cloudevent(
        "e-1",
        data={
            "endpoints": endpoints,
            "replicas": 3,
            "ready": True,
            "tag": "0123",
            "ratio": 0.5,
            "none": None,
        },
        **attributes,
    )
    r = router(registry, {"name": "r", "handler": "native", "params": params})
    (decision,) = r.decide(event)
    return decision


def test_a_one_expression_param_keeps_the_value_a_list_from_the_event(
    native_registry: contract.Registry,
) -> None:
    decision = rendered(native_registry, {"endpoints": "{{ data.endpoints }}"})
    assert decision.params_error is None
    assert decision.params is not None
    assert decision.params["endpoints"] == [
        {"dnsName": "api.example.com", "recordType": "A", "targets": ["10.0.0.7"]},
        {"dnsName": "www.example.com", "recordType": "CNAME", "targets": ["api.example.com"]},
    ]


@pytest.mark.parametrize(
    ("template", "value"),
    [
        ("{{ data.replicas }}", 3),
        ("{{ data.ready }}", True),
        ("{{ data.ratio }}", 0.5),
        ("{{ data.none }}", None),
        ("{{ data.endpoints[1].targets }}", ["api.example.com"]),
        ("{{ data.endpoints | length + 1 }}", 3),  # any single expression, not only a path
        ("{{- data.replicas -}}", 3),
        (
            "{{ data.endpoints[0] }}",
            {"dnsName": "api.example.com", "recordType": "A", "targets": ["10.0.0.7"]},
        ),
        ("{{ data.tag }}", "0123"),  # a string stays a string, even one that reads as a number
        ("{{ data.replicas | string }}", "3"),
        ("{{ data.replicas }} replicas", "3 replicas"),  # text around: a string, as before
        ("{{ data.replicas }}{{ data.ready }}", "3True"),
        (" {{ data.replicas }}", " 3"),
        ("{% if data.ready %}{{ data.replicas }}{% endif %}", "3"),
        ("{{ time }}", "2024-05-01 12:00:00+00:00"),  # not a JSON value: its text
    ],
)
def test_one_expression_params_render_to_native_values_and_others_to_text(
    native_registry: contract.Registry, template: str, value: Any
) -> None:
    when = datetime.datetime(2024, 5, 1, 12, tzinfo=datetime.UTC)
    decision = rendered(native_registry, {"value": template}, time=when)
    assert decision.params_error is None
    assert decision.params is not None and decision.params["value"] == value
    assert type(decision.params["value"]) is type(value)


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"value": "{{ data.missing }}"}, "params.value: template: 'dict object' has no attribute 'missing'"),
        ({"value": "{{ nothing }}"}, "params.value: template: 'nothing' is undefined"),
        ({"value": "{{ data.__class__ }}"}, "params.value: template: not allowed: "),
        ({"value": "{{ ''.__class__.__mro__ }}"}, "params.value: template: not allowed: "),
        ({"text": "{{ data.endpoints }}"}, "params.text: Input should be a valid string"),
        ({"endpoints": "{{ data.tag }}"}, "params.endpoints: Input should be a valid list"),
    ],
)
def test_native_params_keep_strict_undefined_the_sandbox_and_validation(
    native_registry: contract.Registry, params: dict[str, Any], error: str
) -> None:
    decision = rendered(native_registry, params)
    assert decision.params is None
    assert decision.params_error is not None and decision.params_error.startswith(error), (
        decision.params_error
    )


def test_a_number_fills_a_text_param(native_registry: contract.Registry) -> None:
    decision = rendered(native_registry, {"text": "{{ data.replicas }}"})
    assert decision.params_error is None
    assert decision.params is not None and decision.params["text"] == "3"


def test_a_key_named_like_a_dict_method_renders_as_jinja_does(native_registry: contract.Registry) -> None:
    # Jinja reads an attribute before a key: data.items is the dict's method, not the event's field.
    r = router(native_registry, {"name": "r", "handler": "native", "params": {"text": "{{ data.items }}"}})
    (decision,) = r.decide(cloudevent("e-1", data={"items": "three"}))
    assert decision.params is not None
    assert decision.params["text"].startswith("<built-in method items of dict object")


def test_the_ordering_key_is_always_text(native_registry: contract.Registry) -> None:
    r = router(
        native_registry,
        {
            "name": "r",
            "handler": "native",
            "params": {"value": "{{ data.n }}"},
            "orderingKey": "{{ data.n }}",
        },
    )
    (decision,) = r.decide(cloudevent("e-2", data={"n": 7}))
    assert decision.params == {"endpoints": [], "value": 7, "text": ""}
    assert decision.ordering_key == "7"


def test_routes_evaluated_together_each_see_the_event(registry: contract.Registry) -> None:
    """Several routes share one converted CEL context; each still matches on its own expression, and
    one route reading a field the event lacks does not affect the others."""
    r = router(
        registry,
        {
            "name": "by-type",
            "handler": "deploy",
            "match": 'type == "harbor.artifact.pushed"',
            "params": PARAMS,
        },
        {"name": "by-data", "handler": "deploy", "match": 'data.repository.name == "web"', "params": PARAMS},
        {"name": "missing", "handler": "deploy", "match": 'data.repository.owner == "x"', "params": PARAMS},
        {"name": "operator", "handler": "deploy", "match": 'operator.startsWith("robot$")', "params": PARAMS},
    )
    decisions = {d.route: d for d in r.decide(pushed())}
    assert [decisions[name].matched for name in ("by-type", "by-data", "missing", "operator")] == [
        True,
        False,
        False,
        True,
    ]
    assert decisions["missing"].error == "no field 'owner'"
    assert decisions["by-data"].error is None
    (only,) = r.decide(pushed(), only=["by-data"])
    assert only.route == "by-data" and not only.matched


# Expressions that read the event in every way CEL allows: each must decide exactly as it would over the
# whole event, though only the fields it selects are handed to CEL.
READS = [
    'type == "harbor.artifact.pushed" && data.repository.name.startsWith("a")',
    "data.repository.namespace + '/' + data.repository.name == data.repository.repo_full_name",
    'data.resources[0].tag == "v1.2.0"',
    "size(data.resources) == 1 && size(data.repository) == 4",
    'data.resources.exists(r, r.tag.matches("^v[0-9]+"))',
    'data.resources.all(data, data.tag == "v1.2.0")',  # the binding shadows the variable
    "has(data.repository.date_created)",
    "has(data.repository.name) && !has(data.nothing)",
    '"repository" in data && "tag" in data.resources[0]',
    'data.repository == {"name": "api"}',
    'data["repository"]["name"] == "api"',
    "data.repository.owner.id == 1",  # a missing field: the same error
    "data.nothing.deeper == 1",
    "data.resources.tag == 1",  # a field of a list: the same error
    'data.repository.name == "data.repository.owner"',  # paths inside strings are not reads
    "(data).repository.name == 'api'",
    'operator == "robot$ci" && subject == null',
    "data.repository.map(k, k).size() == 4",
    'data.repository.name.size() > 2 && data.repository.name != ""',
]


@pytest.mark.parametrize("match", READS)
def test_a_match_reads_only_what_it_selects_and_decides_as_over_the_whole_event(
    registry: contract.Registry, match: str
) -> None:
    event = pushed()
    expected: Any
    try:
        expected = cel.compile(match).execute(routing.context_of(event))
    except Exception as exc:  # what the route reports as its evaluation error
        expected = routing._error_text(exc)
    alone = router(registry, {"name": "r", "handler": "deploy", "match": match, "params": PARAMS})
    shared = router(
        registry,
        {"name": "r", "handler": "deploy", "match": match, "params": PARAMS},
        {
            "name": "other",
            "handler": "deploy",
            "match": "data.repository.repo_type == 'private'",
            "params": PARAMS,
        },
    )
    for decisions in (alone.decide(event), shared.decide(event, only=["r", "other"])):
        decision = decisions[0]
        assert (decision.error if decision.error is not None else decision.matched) == expected, match


def test_reads_records_selected_fields_and_whole_values() -> None:
    assert routing.reads('type == "t" && data.a.b.startsWith("x") && data.c > 0', ["type", "data"]) == {
        "type": routing.WHOLE,
        "data": {"a": {"b": routing.WHOLE}, "c": routing.WHOLE},
    }
    assert routing.reads("data.a.b == 1 && size(data.a) == 2", ["data"]) == {"data": {"a": routing.WHOLE}}
    assert routing.reads('"k" in data || data.x == 1', ["data"]) == {"data": routing.WHOLE}
