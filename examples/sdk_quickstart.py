"""railwatch SDK quick start: guard an app's own model calls, no sidecar needed.

    pip install -e '.[models]'        # or: pip install railwatch
    OPENAI_BASE_URL=http://127.0.0.1:8000/v1 OPENAI_API_KEY=... python examples/sdk_quickstart.py

Settings and policy come from the same files and RAILWATCH_* variables as the sidecar
(RAILWATCH_SDK_CONFIG, RAILWATCH_SDK_POLICY; the shipped default policy otherwise).
Traces go to the configured exporters (embedded ClickHouse under .railwatch/ by default).
"""

from __future__ import annotations

import os

from openai import OpenAI

from sidecar.sdk import GuardrailViolation, current_trace_id, guard, observe, record_feedback, wrap_openai

client = wrap_openai(OpenAI())  # every chat/completions create() is now guarded and traced
MODEL = os.environ.get("MODEL", "railwatch-demo")


@guard(input=["question"])  # any function: the arguments named here are checked and masked
def shout(question: str) -> str:
    return question.upper()


@observe(name="support-answer")  # one trace; the calls inside are its children
def answer(question: str) -> str:
    reply = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": question}])
    return reply.choices[0].message.content or ""


def main() -> None:
    print(answer("Please write to alice@example.com about my order."))  # the model saw a placeholder
    print(shout("call me at alice@example.com"))  # "CALL ME AT alice@example.com": it saw a placeholder
    try:
        answer("be rude [[demo:toxic]]")
    except GuardrailViolation as exc:  # decision and reasons, never the text
        print("blocked:", exc.action, exc.stage, ", ".join(exc.reasons))

    @guard(input=["text"])
    def with_trace_id(text: str) -> str | None:
        return current_trace_id()

    trace_id = with_trace_id("thanks")
    if trace_id is not None:
        record_feedback(trace_id, thumbs="up")
        print("feedback recorded for", trace_id)


if __name__ == "__main__":
    main()
