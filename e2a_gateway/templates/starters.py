"""The starter catalog: a few ready-made templates a user can copy and adapt.

Each starter has a subject, a plain-text part and an HTML part (inline styles only, no
external resources), all written in the engine's syntax, and lists every variable they use
with an example value, so that rendering a starter with its examples shows what it looks like.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StarterVariable:
    """A variable a starter uses: whether it must be given, whether it is inserted unescaped
    (`{{{…}}}`), what it is for, and a realistic value."""

    name: str
    required: bool
    raw: bool
    description: str
    example: str


@dataclass(frozen=True)
class Starter:
    """A catalog template: its alias and title, what it is for, its three parts and the
    variables they use."""

    alias: str
    name: str
    description: str
    version: str
    subject: str
    text: str
    html: str
    variables: tuple[StarterVariable, ...]


_BODY = "margin:0;padding:24px;background:#f4f5f7;font-family:Arial,Helvetica,sans-serif;"
_CARD = (
    "max-width:560px;margin:0 auto;padding:24px;background:#ffffff;border-radius:6px;"
    "color:#222222;font-size:15px;line-height:1.5;"
)


def _html(body: str) -> str:
    """`body` inside a minimal HTML document with the catalog's page and card styles."""
    return (
        '<!DOCTYPE html>\n<html lang="en">\n'
        f'<body style="{_BODY}">\n<div style="{_CARD}">\n{body}</div>\n</body>\n</html>\n'
    )


_RECIPIENT_NAME = StarterVariable(
    "recipient_name", True, False, "How to address the recipient.", "Dana"
)

_APPROVAL_REQUEST = Starter(
    alias="approval-request",
    name="Approval request",
    description=(
        "Asks a person to approve or decline something an agent wants to do. approve_url and "
        "reject_url must lead to confirmation pages, never to links that act on a GET: mail "
        "scanners and link previews open every link in a message."
    ),
    version="1",
    subject="Approval needed: {{summary}}",
    text=(
        "Hi {{recipient_name}},\n\n"
        "{{agent_name}} would like to go ahead with the following and needs your approval "
        "first:\n\n"
        "{{summary}}\n\n"
        "Approve: {{approve_url}}\n"
        "Decline: {{reject_url}}\n\n"
        "Each link opens a page where you confirm your decision; nothing happens until you "
        "do. If you were not expecting this request, decline it.\n"
    ),
    html=_html(
        '<p style="margin:0 0 16px;">Hi {{recipient_name}},</p>\n'
        '<p style="margin:0 0 16px;">{{agent_name}} would like to go ahead with the following '
        "and needs your approval first:</p>\n"
        '<p style="margin:0 0 16px;padding:12px 16px;background:#f0f4f8;'
        'border-left:4px solid #3b6ea5;">{{summary}}</p>\n'
        "{{{details_html}}}\n"
        '<p style="margin:24px 0 0;">\n'
        '<a href="{{approve_url}}" style="display:inline-block;padding:10px 20px;'
        "margin-right:8px;border-radius:4px;background:#2e7d32;color:#ffffff;"
        'text-decoration:none;font-weight:bold;">Approve</a>\n'
        '<a href="{{reject_url}}" style="display:inline-block;padding:10px 20px;'
        "border-radius:4px;background:#c62828;color:#ffffff;"
        'text-decoration:none;font-weight:bold;">Decline</a>\n'
        "</p>\n"
        '<p style="margin:16px 0 0;font-size:13px;color:#666666;">Each button opens a page '
        "where you confirm your decision; nothing happens until you do. If you were not "
        "expecting this request, decline it.</p>\n"
    ),
    variables=(
        _RECIPIENT_NAME,
        StarterVariable(
            "agent_name",
            True,
            False,
            "The agent (or team) asking for approval.",
            "Procurement Assistant",
        ),
        StarterVariable(
            "summary",
            True,
            False,
            "One sentence saying what the agent wants to do.",
            "Pay invoice INV-2041 from Northwind Supplies ($1,250.00)",
        ),
        StarterVariable(
            "approve_url",
            True,
            False,
            "Link to a page where the recipient confirms the approval; it must not act by "
            "itself when opened.",
            "https://approvals.example.com/requests/apr_7f3c2a/approve",
        ),
        StarterVariable(
            "reject_url",
            True,
            False,
            "Link to a page where the recipient confirms declining; it must not act by itself "
            "when opened.",
            "https://approvals.example.com/requests/apr_7f3c2a/decline",
        ),
        StarterVariable(
            "details_html",
            False,
            True,
            "Optional HTML fragment with further detail, shown in the HTML part only. It is "
            "inserted unescaped, so it must come from a trusted source.",
            "<ul><li>Due: 15 March</li><li>Budget line: Office supplies</li></ul>",
        ),
    ),
)

_FOLLOW_UP = Starter(
    alias="follow-up",
    name="Follow-up",
    description="A polite follow-up on an earlier message that has not had a reply.",
    version="1",
    subject="Following up: {{topic}}",
    text=(
        "Hi {{recipient_name}},\n\n"
        "I wanted to follow up on my earlier message about {{topic}}. Inboxes fill up "
        "quickly, so I am bringing it back to the top of yours.\n\n"
        "{{next_step}}\n\n"
        "If now is not a good time, just let me know and I will check back later.\n\n"
        "Thanks,\n"
        "{{sender_name}}\n"
    ),
    html=_html(
        '<p style="margin:0 0 16px;">Hi {{recipient_name}},</p>\n'
        '<p style="margin:0 0 16px;">I wanted to follow up on my earlier message about '
        "{{topic}}. Inboxes fill up quickly, so I am bringing it back to the top of "
        "yours.</p>\n"
        '<p style="margin:0 0 16px;">{{next_step}}</p>\n'
        '<p style="margin:0 0 16px;">If now is not a good time, just let me know and I will '
        "check back later.</p>\n"
        '<p style="margin:0;">Thanks,<br>{{sender_name}}</p>\n'
    ),
    variables=(
        _RECIPIENT_NAME,
        StarterVariable(
            "topic",
            True,
            False,
            "What the earlier message was about.",
            "the Q3 partnership proposal",
        ),
        StarterVariable("sender_name", True, False, "Who signs the message.", "Alex Morgan"),
        StarterVariable(
            "next_step",
            False,
            False,
            "Optional sentence proposing what happens next, shown as its own paragraph; "
            "leave it empty to leave the paragraph out.",
            "Would a 20-minute call on Thursday or Friday work for you?",
        ),
    ),
)

_WELCOME = Starter(
    alias="welcome",
    name="Welcome",
    description="Welcomes a new user to a product and invites questions.",
    version="1",
    subject="Welcome to {{product_name}}",
    text=(
        "Hi {{recipient_name}},\n\n"
        "Welcome to {{product_name}}! Your account is ready to use.\n\n"
        "{{getting_started_url}}\n\n"
        "If you have any questions while you get set up, reply to this email and we will be "
        "glad to help.\n\n"
        "Best regards,\n"
        "{{sender_name}}\n"
    ),
    html=_html(
        '<p style="margin:0 0 16px;">Hi {{recipient_name}},</p>\n'
        '<p style="margin:0 0 16px;">Welcome to {{product_name}}! Your account is ready to '
        "use.</p>\n"
        '<p style="margin:0 0 16px;"><a href="{{getting_started_url}}" '
        'style="color:#3b6ea5;">{{getting_started_url}}</a></p>\n'
        '<p style="margin:0 0 16px;">If you have any questions while you get set up, reply to '
        "this email and we will be glad to help.</p>\n"
        '<p style="margin:0;">Best regards,<br>{{sender_name}}</p>\n'
    ),
    variables=(
        _RECIPIENT_NAME,
        StarterVariable(
            "product_name", True, False, "The product the user signed up for.", "Acme Cloud"
        ),
        StarterVariable(
            "sender_name", True, False, "Who signs the message.", "The Acme Cloud team"
        ),
        StarterVariable(
            "getting_started_url",
            False,
            False,
            "Optional link to a getting-started guide, shown on its own line; leave it empty "
            "to leave it out.",
            "https://docs.example.com/getting-started",
        ),
    ),
)

STARTERS: tuple[Starter, ...] = (_APPROVAL_REQUEST, _FOLLOW_UP, _WELCOME)
"""The catalog, sorted by alias."""

_BY_ALIAS = {s.alias: s for s in STARTERS}


def starter(alias: str) -> Starter | None:
    """The starter called `alias`, or None if the catalog has none by that name."""
    return _BY_ALIAS.get(alias)
