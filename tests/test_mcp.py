"""The classifier as an MCP tool, called the way an LLM agent calls it: the ``mcp`` package's
streamable-HTTP client against the app served in this process, with a picture as base64."""

from __future__ import annotations

import ast
import asyncio
import base64
from pathlib import Path

import httpx
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

import app
from conftest import serve

ROOT = Path(__file__).resolve().parent.parent
CAT = ROOT / "examples" / "cat_1.jpg"


@pytest.fixture(scope="module")
def mcp_url(classifier):
    with serve(app.build_demo(classifier), mcp_server=True) as url:
        yield url


async def _call(url: str, tool: str, arguments: dict) -> tuple[list, object]:
    async with streamable_http_client(url + "gradio_api/mcp/") as (read, write, _):
        async with ClientSession(read, write) as session:
            await session.initialize()
            tools = (await session.list_tools()).tools
            return tools, await session.call_tool(tool, arguments)


def test_tool_list_is_the_documented_endpoints_only(mcp_url):
    schema = httpx.get(mcp_url + "gradio_api/mcp/schema", timeout=30).json()
    names = {tool["name"] for tool in schema}
    assert {"predict", "explain"} <= names
    assert "live" not in names and not any("lambda" in n for n in names)  # private events are not tools
    predict = next(t for t in schema if t["name"] == "predict")
    for words in ("ten CIFAR-10 classes", "32x32", "unsure", "calibrated"):
        assert words in predict["description"]
    assert "JPEG" in predict["inputSchema"]["properties"]["image"]["description"]


def test_agent_gets_the_ten_probabilities_for_a_base64_picture(mcp_url, classifier):
    data_url = "data:image/jpeg;base64," + base64.b64encode(CAT.read_bytes()).decode()
    tools, result = asyncio.run(_call(mcp_url, "predict", {"image": data_url}))
    assert "predict" in {t.name for t in tools}
    assert not result.isError, result.content
    text = " ".join(c.text for c in result.content if c.type == "text")
    label, notice = ast.literal_eval(text)  # Gradio 6.31 sends the outputs' Python repr as the tool's text
    confidences = {c["label"]: c["confidence"] for c in label["confidences"]}
    expected = classifier.predict(str(CAT))[0]
    assert set(confidences) == set(classifier.classes)
    assert sum(confidences.values()) == pytest.approx(1.0, abs=1e-3)
    for name, p in expected.items():
        assert confidences[name] == pytest.approx(p, abs=1e-3)
    assert label["label"] == max(expected, key=expected.get)
    assert notice == ""  # a clear cat picture: no unsure notice


def test_a_server_path_is_refused_over_mcp_too(mcp_url):
    _, result = asyncio.run(_call(mcp_url, "predict", {"image": "/etc/passwd"}))
    text = " ".join(getattr(c, "text", "") for c in result.content)
    assert result.isError or app.REFUSED in text or "Invalid file data" in text
    assert "root:" not in text
