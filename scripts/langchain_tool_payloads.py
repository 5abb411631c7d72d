"""What each major LangChain chat-model integration sends to its API for a tool result carrying the toolkit's content
(a text block and a JPEG image block): the evidence behind ``rea2seg_tools.toolkit.accepts_tool_images`` and the table
in docs/AGENTS.md. Builds the request payloads only (no API call, no key needed).

    python -m venv /tmp/lcint && /tmp/lcint/bin/pip install langchain-openai langchain-anthropic langchain-google-genai
    /tmp/lcint/bin/python scripts/langchain_tool_payloads.py

Not part of the test suite: the three provider packages are not project dependencies.
"""
import base64
import json

from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.messages.content import create_image_block, create_text_block

JPEG = base64.b64encode(b"\xff\xd8\xff\xe0 a jpeg").decode()
MESSAGES = [
    HumanMessage("segment the red thing in /x.jpg"),
    AIMessage("", tool_calls=[{"name": "reasoning_segment", "args": {"image_path": "/x.jpg", "question": "red"},
                               "id": "call_1", "type": "tool_call"}]),
    ToolMessage([create_text_block(text='{"box_xyxy":[0,0,8,8]}'), create_image_block(base64=JPEG,
                                                                                      mime_type="image/jpeg")],
                tool_call_id="call_1", name="reasoning_segment"),
]


def main() -> None:
    from langchain_anthropic import ChatAnthropic
    from langchain_google_genai import ChatGoogleGenerativeAI
    from langchain_openai import ChatOpenAI

    for label, model in [("ChatOpenAI (Chat Completions, the default)", ChatOpenAI(model="gpt-4.1", api_key="x")),
                         ("ChatOpenAI(use_responses_api=True)",
                          ChatOpenAI(model="gpt-4.1", api_key="x", use_responses_api=True))]:
        payload = model._get_request_payload(MESSAGES)
        print(f"== {label}:", json.dumps((payload.get("messages") or payload.get("input"))[-1]))
    payload = ChatAnthropic(model="claude-sonnet-4-5", api_key="x")._get_request_payload(MESSAGES)
    print("== ChatAnthropic:", json.dumps(payload["messages"][-1]))
    request = ChatGoogleGenerativeAI(model="gemini-3-pro-preview", api_key="x")._prepare_request(MESSAGES)
    contents = request["contents"] if isinstance(request, dict) else request.contents
    print("== ChatGoogleGenerativeAI:", contents[-1])


if __name__ == "__main__":
    main()
