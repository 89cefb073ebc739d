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
import guard
from conftest import serve

pytestmark = pytest.mark.served
ROOT = Path(__file__).resolve().parent.parent
CAT = ROOT / "examples" / "cat_1.jpg"


@pytest.fixture(scope="module")
def mcp_url(classifier):
    with serve(app.build_demo(classifier), mcp_server=True) as url:
        yield url


async def _call(url: str, tool: str, arguments: dict):
    async with streamable_http_client(url + "gradio_api/mcp/") as (read, write, _):
        async with ClientSession(read, write) as session:
            await session.initialize()
            return await session.call_tool(tool, arguments)


def text_of(result) -> str:
    return " ".join(getattr(c, "text", "") for c in result.content)


def test_the_tools_are_predict_and_explain_and_say_what_the_flag_means(mcp_url):
    schema = httpx.get(mcp_url + "gradio_api/mcp/schema", timeout=30).json()
    assert {"predict", "explain"} <= {t["name"] for t in schema}
    assert not {"live", "load_example"} & {t["name"] for t in schema}  # private events are not tools
    predict = next(t for t in schema if t["name"] == "predict")
    for words in ("ten CIFAR-10 classes", "32x32", "unsure flag", "none of the ten", "calibrated", "promise nothing"):
        assert words in predict["description"], words
    assert "base64" in predict["inputSchema"]["properties"]["image"]["description"]


def test_an_agent_gets_the_ten_probabilities_and_the_flag_for_a_base64_picture(mcp_url, classifier):
    data_url = "data:image/jpeg;base64," + base64.b64encode(CAT.read_bytes()).decode()
    result = asyncio.run(_call(mcp_url, "predict", {"image": data_url}))
    assert not result.isError, result.content
    label, unsure, words = ast.literal_eval(text_of(result))  # Gradio 6.31 sends the outputs' repr as text
    expected = classifier.predict(CAT)
    got = {c["label"]: c["confidence"] for c in label["confidences"]}
    assert got == pytest.approx(expected.probabilities, abs=1e-3)
    assert label["label"] == expected.top and unsure is False and expected.top in words


def test_a_url_or_a_server_path_is_refused_clearly_and_nothing_is_fetched(mcp_url):
    for image in ("https://huggingface.co/some/picture.png", "/etc/passwd"):
        result = asyncio.run(_call(mcp_url, "predict", {"image": image}))
        assert result.isError and "base64" in text_of(result) and "root:" not in text_of(result)


def test_a_message_over_the_mcp_limit_gets_the_limit_in_its_answer(mcp_url):
    reply = httpx.post(mcp_url + "gradio_api/mcp/", content=b"x" * (guard.MAX_MCP_BYTES + 1),
                       headers={"content-type": "application/json"})
    assert reply.status_code == 413 and str(guard.MAX_MCP_BYTES // 1024) in reply.json()["detail"]
