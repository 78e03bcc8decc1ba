"""The dead-letter queue as an operator watches it: ``glue_dead_letters`` is its current depth
(``glue_dead_lettered_total`` counts dead-lettering: a counter named ``glue_dead_letters_total`` would
share the gauge's metric family), and every operator retry or purge is logged with who did it and what
it touched."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest
import yaml

from glue import app, cli, settings
from tests import support


async def test_depth_gauge_follows_dead_letters_and_operator_actions_are_logged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = {
        "server": {"host": "127.0.0.1", "port": 0},
        "journal": {"path": str(tmp_path / "j.db")},
        "logging": {"format": "json"},
        "execution": {"pollSeconds": 0.05},
        "endpoints": [{"name": "ce", "path": "/events", "format": "cloudevents"}],
        "routes": [{"name": "broken", "handler": "log", "params": {"message": "{{ data.nope }}"}}],
    }
    path = tmp_path / "glue.yaml"
    path.write_text(yaml.safe_dump(config))
    loaded = settings.load(path)
    app.load_plugins(loaded)
    async with support.running(loaded) as daemon:
        url = support.base_url(daemon) + "/events"
        async with aiohttp.ClientSession() as session:
            for n in range(2):
                event = {"specversion": "1.0", "id": str(n), "source": "/t", "type": "t", "data": {}}
                headers = {"Content-Type": "application/cloudevents+json"}
                async with session.post(url, json=event, headers=headers) as answer:
                    assert answer.status == 202
        await support.eventually(lambda: support.metric("glue_dead_letters") == 2, within=15)
        capsys.readouterr()
        code = await asyncio.to_thread(cli.main, ["dlq", "purge", "--all", "-c", str(path)])
        assert code == 0
        captured = capsys.readouterr()
        assert captured.out.strip() == "2 invocations purged"
        [line] = [json.loads(text) for text in captured.err.splitlines() if "dead letters purged" in text]
        assert line["routes"] == ["broken"] and len(line["invocations"]) == 2 and line["operator"]
        assert line["filter"]["all"] is True
        await support.eventually(lambda: support.metric("glue_dead_letters") == 0, within=15)
