"""`e2a listen`: print or forward an agent's mail as it arrives (WebSocket, via the SDK).

Each notification is fetched with `get_message` (which marks it read) and then printed, as
one JSON object per line with `--json`. `--forward URL` POSTs the message JSON to URL; with
`--forward-token` the POST is an OpenAI Responses API request (`{"model", "input"}`, bearer
token) and the model's output text is sent back as the reply. A failing forward target is
reported on stderr and listening goes on: one bad answer must not stop the agent.
"""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

import anyio

from e2a.cli.output import cell, email_json

if TYPE_CHECKING:  # the SDK and httpx load when `e2a listen` runs (see client_commands.py)
    import httpx

    from e2a.v1 import AsyncInboundEmail

DEFAULT_MODEL = "gpt-4o-mini"
INSTRUCTIONS = (
    "You are an email assistant. Write only the body of the reply to the email below, "
    "in plain text, without a subject line."
)


def _positive(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise argparse.ArgumentTypeError("must be a whole number, 1 or more")
    return int(text)


def add_listen_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `e2a listen` (besides --agent and --json)."""
    parser.add_argument("--forward", metavar="URL", help="POST each message to URL")
    parser.add_argument(
        "--forward-token",
        metavar="TOKEN",
        help="with --forward: send an OpenAI Responses API request with this bearer token "
        "and reply with the model's output text",
    )
    parser.add_argument(
        "--model", default=DEFAULT_MODEL, help=f"with --forward-token (default {DEFAULT_MODEL})"
    )
    parser.add_argument("--max", type=_positive, metavar="N", help="stop after N messages")


def responses_request(email: dict[str, Any], model: str) -> dict[str, Any]:
    """The Responses API request for one message: the model and the email as input text."""
    text = (
        f"{INSTRUCTIONS}\n\nFrom: {email['from']}\nTo: {email['recipient']}\n"
        f"Subject: {email['subject']}\n\n{email['text_body']}"
    )
    return {"model": model, "input": text}


def output_text(answer: Any) -> str:
    """The text of a Responses API answer (`output_text`, else the output message parts)."""
    if not isinstance(answer, dict):
        return ""
    if isinstance(answer.get("output_text"), str):
        return str(answer["output_text"])
    parts: list[str] = []
    for item in answer.get("output") or []:
        if isinstance(item, dict) and item.get("type") == "message":
            for content in item.get("content") or []:
                if isinstance(content, dict) and content.get("type") == "output_text":
                    parts.append(str(content.get("text") or ""))
    return "".join(parts)


def _note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def _forward(
    http: httpx.AsyncClient,
    email: AsyncInboundEmail,
    data: dict[str, Any],
    args: argparse.Namespace,
) -> None:
    """Forward one message; with a token, reply with the model's answer."""
    if not args.forward_token:
        response = await http.post(args.forward, json=data)
        _note(f"  forwarded {data['message_id']} to {args.forward}: HTTP {response.status_code}")
        return
    response = await http.post(
        args.forward,
        json=responses_request(data, args.model),
        headers={"Authorization": f"Bearer {args.forward_token}"},
    )
    if response.status_code >= 400:
        _note(f"  {args.forward} answered HTTP {response.status_code}: not replying")
        return
    try:
        text = output_text(response.json())
    except ValueError:
        text = ""
    if not text.strip():
        _note(f"  {args.forward} gave no output text: not replying")
        return
    sent = await email.reply(text)
    _note(f"  replied to {data['message_id']}: {sent.message_id} ({sent.method}, {sent.status})")


async def listen_loop(
    args: argparse.Namespace, url: str, key: str, agent: str, *, as_json: bool
) -> None:
    """Print (and forward) messages until interrupted or `--max` is reached."""
    import httpx

    from e2a.v1 import AsyncE2AClient

    seen = 0
    async with (
        AsyncE2AClient(api_key=key, agent_email=agent, base_url=url) as client,
        httpx.AsyncClient(timeout=120) as http,
    ):
        _note(f"Listening for mail to {agent} (Ctrl-C to stop)…")
        # aclosing: the WebSocket closes as soon as we stop, not when collected.
        async with aclosing(client.listen(agent)) as notifications:
            async for notification in notifications:
                email = await client.get_message(notification.message_id)
                data = email_json(email)
                if as_json:
                    print(json.dumps(data, sort_keys=True), flush=True)
                else:
                    shown = (data["received_at"], data["from"], data["subject"], data["message_id"])
                    print("  ".join(cell(value) for value in shown), flush=True)
                if args.forward:
                    try:
                        await _forward(http, email, data, args)
                    except httpx.HTTPError as exc:
                        _note(f"  cannot forward to {args.forward}: {exc}")
                seen += 1
                if args.max is not None and seen >= args.max:
                    return


def cmd_listen_with(
    args: argparse.Namespace, url: str, key: str, agent: str, *, as_json: bool
) -> None:
    """Run the listener on an event loop of its own."""
    anyio.run(lambda: listen_loop(args, url, key, agent, as_json=as_json))
