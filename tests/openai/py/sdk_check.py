"""The official `openai` Python package against rill's OpenAI face, unmodified.

Run by sdk.test.mjs with the venv of tests/openai (scripts/test installs requirements.txt):

    sdk_check.py all BASE              every check against one instance
    sdk_check.py resume BASE_A BASE_B  a background response created on A, resumed on B

Exits non-zero (an AssertionError) on the first check that fails.
"""

import json
import sys
import time

import urllib.request

import openai
from openai import OpenAI

QUESTION = "Tell me about rivers"


def client(base):
    # Auth mode `none`: any key is accepted (the SDK insists on one).
    return OpenAI(base_url=f"{base}/v1", api_key="sk-anything", max_retries=0, timeout=30)


def native(base, method, path, body=None):
    """A request to rill's native API (the standard library: nothing else to install)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{base}{path}", data=data, method=method)
    if data is not None:
        request.add_header("content-type", "application/json")
    with urllib.request.urlopen(request, timeout=15) as response:
        return json.loads(response.read())


def native_answer(base, content):
    """The demo's stored answer to `content` in a new chat, through rill's native API."""
    chat = native(base, "POST", "/api/chats", {"bot": "demo"})
    sent = native(base, "POST", f"/api/chats/{chat['id']}/messages", {"content": content})
    answer_id = sent["assistant_message"]["id"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        page = native(base, "GET", f"/api/chats/{chat['id']}/messages?limit=100")
        for m in page["messages"]:
            if m["id"] == answer_id and m["status"] != "streaming":
                return m
        time.sleep(0.05)
    raise AssertionError("the native answer did not complete")


def chat_count(base):
    return len(native(base, "GET", "/api/chats?limit=100")["chats"])


def check_models(c):
    ids = [m.id for m in c.models.list()]
    assert ids == ["demo", "tools"], ids


def check_chat_completions(c, base):
    stored = native_answer(base, QUESTION)
    stored_reasoning = "".join(p["text"] for p in stored["parts"] if p["type"] == "reasoning")
    text, reasoning, usage, finish = "", "", None, None
    stream = c.chat.completions.create(
        model="demo",
        messages=[{"role": "user", "content": QUESTION}],
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        text += delta.content or ""
        # Not a field of the SDK's model: kept as an extra, as DeepSeek's is.
        reasoning += getattr(delta, "reasoning_content", None) or ""
        finish = chunk.choices[0].finish_reason or finish
    assert text == stored["content"], (text, stored["content"])
    assert stored_reasoning and reasoning == stored_reasoning, reasoning
    assert finish == "stop", finish
    assert usage is not None and usage.total_tokens > 0, usage
    whole = c.chat.completions.create(model="demo", messages=[{"role": "user", "content": QUESTION}])
    assert whole.choices[0].message.content == stored["content"]
    assert getattr(whole.choices[0].message, "reasoning_content", None) == stored_reasoning


def check_tool_calls(c):
    tools = [
        {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}},
        {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}}}},
    ]
    with c.chat.completions.stream(
        model="tools",
        messages=[{"role": "user", "content": "Weather and time in Seoul?"}],
        tools=tools,
    ) as stream:
        done = [e.name for e in stream if e.type == "tool_calls.function.arguments.done"]
        final = stream.get_final_completion()
    calls = [(t.id, t.function.name, json.loads(t.function.arguments)) for t in final.choices[0].message.tool_calls]
    assert calls == [
        ("call_aW3gHiqR", "get_weather", {"city": "Seoul"}),
        ("call_Xk9pL2mT", "get_time", {"tz": "Asia/Seoul"}),
    ], calls
    assert final.choices[0].finish_reason == "tool_calls"
    assert done == ["get_weather", "get_time"], done


def resumed(create_on, resume_on):
    """A background response created on one client, broken off, resumed on the other."""
    events = []
    stream = create_on.responses.create(model="demo", input=QUESTION, background=True, stream=True)
    for event in stream:
        events.append(event)
        if len(events) >= 6:
            break
    stream.close()
    assert events[0].type == "response.created"
    response_id = events[0].response.id
    rest = resume_on.responses.retrieve(response_id, stream=True, starting_after=events[-1].sequence_number)
    for event in rest:
        events.append(event)
    numbers = [e.sequence_number for e in events]
    assert len(set(numbers)) == len(numbers), "an event came twice"
    assert numbers == sorted(numbers)
    assert events[-1].type == "response.completed", events[-1].type
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    final = resume_on.responses.retrieve(response_id)
    assert final.status == "completed", final.status
    assert text == final.output_text
    assert QUESTION in text


def check_cancel(c):
    created = c.responses.create(model="demo", input=QUESTION, background=True)
    assert created.status in ("queued", "in_progress"), created.status
    seen = 0
    for event in c.responses.retrieve(created.id, stream=True):
        if event.type == "response.output_text.delta":
            seen += 1
            if seen >= 3:
                break
    cancelled = c.responses.cancel(created.id)
    assert cancelled.status == "cancelled", cancelled.status
    assert cancelled.output_text, "the text is kept"
    again = c.responses.cancel(created.id)
    assert again.status == "cancelled" and again.output_text == cancelled.output_text


def check_errors(c, base):
    before = chat_count(base)

    def raises(kind, call, **expect):
        try:
            call()
        except kind as e:
            for field, value in expect.items():
                assert getattr(e, field) == value, (field, getattr(e, field), value)
            return
        raise AssertionError(f"no {kind.__name__}")

    raises(
        openai.NotFoundError,
        lambda: c.chat.completions.create(model="gpt-nope", messages=[{"role": "user", "content": "x"}]),
        code="model_not_found",
        param="model",
    )
    raises(
        openai.BadRequestError,
        lambda: c.chat.completions.create(model="demo", messages="x"),
        param="messages",
        type="invalid_request_error",
    )
    raises(openai.BadRequestError, lambda: c.responses.create(model="demo", input=42), param="input")
    raises(openai.NotFoundError, lambda: c.responses.create(model="gpt-nope", input="x"), code="model_not_found")
    raises(openai.NotFoundError, lambda: c.responses.retrieve("resp_nope"))
    assert chat_count(base) == before, "a refused request stored something"


def main():
    what = sys.argv[1]
    if what == "all":
        base = sys.argv[2]
        c = client(base)
        check_models(c)
        check_chat_completions(c, base)
        check_tool_calls(c)
        resumed(c, c)
        check_cancel(c)
        check_errors(c, base)
    elif what == "resume":
        resumed(client(sys.argv[2]), client(sys.argv[3]))
    else:
        raise SystemExit(f"unknown check {what!r}")
    print(f"python openai {openai.__version__}: {what} passed")


if __name__ == "__main__":
    main()
