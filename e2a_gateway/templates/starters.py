"""The starter catalog: ready-made templates a user copies into their account and adapts.

The catalog offers the starters e2a's server ships, under the same aliases, names and
versions and with the same variables (the same names, the same required and raw flags, used
in the same parts), so `template_data` written for one of e2a's starters renders every part of
ours; the wording and layout are our own. `follow-up` is ours alone: e2a's clients take the
catalog as a list and tolerate an entry they do not know.

Each starter has a subject, a plain-text part and an HTML part, all written in the engine's
flat syntax (e2a's has no sections either: a repeated block such as a receipt's line items is
one raw `{{{…_html}}}` fragment of rows for the HTML part and one `…_text` value for the text
part). The HTML is a small, valid document with inline styles only and no external resources;
plain values are inserted with `{{…}}`, which the HTML part escapes. Every variable is listed
with an example value, so rendering a starter with its examples shows what it looks like.
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


VERSION = "1.0.0"
"""The catalog's version, as e2a numbers its starters; copies record it."""

_FONT = "font-family:Arial,Helvetica,sans-serif;"
_INK = "#23262f"
_MUTED = "#6b6f7b"
_ACCENT = "#2f5fd0"
_RULE = "#dde0e6"
_PAGE = "#eef0f3"
_CELL = "padding:6px 0;"
"""The style a fragment's table cells are given in the examples."""


def _document(title: str, body: str) -> str:
    """`body` as a complete HTML document titled `title`."""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n'
        "<head>\n"
        '<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{title}</title>\n"
        "</head>\n"
        f'<body style="margin:0;padding:0;background-color:{_PAGE};">\n'
        f"{body}"
        "</body>\n"
        "</html>\n"
    )


def _branded(title: str, card: str, footer_extra: str = "") -> str:
    """A document in the catalog's branded layout: the hidden `{{preheader}}`, the company's
    name above a white card holding `card`, and a footer with the company's address and
    support address, after `footer_extra` (a line of its own, if any)."""
    return _document(
        title,
        '<div style="display:none;max-height:0;max-width:0;overflow:hidden;opacity:0;">'
        "{{preheader}}</div>\n"
        f'<div style="padding:24px 12px;background-color:{_PAGE};">\n'
        '<table role="presentation" style="width:100%;max-width:600px;margin:0 auto;'
        'border-collapse:collapse;">\n'
        f'<tr><td style="padding:0 4px 12px;{_FONT}font-size:18px;font-weight:bold;'
        f'color:{_ACCENT};">{{{{company_name}}}}</td></tr>\n'
        f'<tr><td style="padding:32px;background-color:#ffffff;border:1px solid {_RULE};'
        f'border-radius:8px;{_FONT}font-size:15px;line-height:1.55;color:{_INK};">\n'
        f"{card}"
        "</td></tr>\n"
        f'<tr><td style="padding:16px 8px;text-align:center;{_FONT}font-size:12px;'
        f'line-height:1.6;color:{_MUTED};">\n'
        f"{footer_extra}"
        "{{company_name}} &middot; {{company_address}}<br>\n"
        f'Questions? Write to <a href="mailto:{{{{support_email}}}}" style="color:{_MUTED};">'
        "{{support_email}}</a>\n"
        "</td></tr>\n"
        "</table>\n"
        "</div>\n",
    )


def _heading(content: str) -> str:
    return (
        f'<h1 style="margin:0 0 12px;{_FONT}font-size:21px;line-height:1.3;color:{_INK};">'
        f"{content}</h1>\n"
    )


def _paragraph(content: str, style: str = "") -> str:
    return f'<p style="margin:0 0 16px;{style}">{content}</p>\n'


def _muted(content: str) -> str:
    return _paragraph(content, f"font-size:13px;color:{_MUTED};")


def _button(url: str, label: str, colour: str = _ACCENT) -> str:
    """A link styled as a button; `url` and `label` are template source."""
    return (
        f'<a href="{url}" style="display:inline-block;padding:12px 24px;margin:0 8px 8px 0;'
        f"border-radius:5px;background-color:{colour};color:#ffffff;font-weight:bold;"
        f'text-decoration:none;">{label}</a>'
    )


def _fallback(variable: str) -> str:
    """The address behind a button written out, for mail programs that hide the button."""
    return _muted(
        "Button not working? Paste this address into your browser:<br>\n"
        f'<a href="{{{{{variable}}}}}" style="color:{_ACCENT};word-break:break-all;">'
        f"{{{{{variable}}}}}</a>"
    )


def _rows_table(rows: str, extra_rows: str = "") -> str:
    """A full-width table around a raw fragment of `<tr>` rows (and rows of our own after)."""
    return (
        '<table role="presentation" style="width:100%;margin:0 0 24px;border-collapse:collapse;'
        f'border-top:1px solid {_RULE};border-bottom:1px solid {_RULE};">\n'
        f"{rows}\n{extra_rows}"
        "</table>\n"
    )


_AGENT_NOTE_HTML = _muted(
    "{{agent_name}} is an automated agent; it sent this message on behalf of {{company_name}}."
)
_AGENT_NOTE_TEXT = (
    "{{agent_name}} is an automated agent; it sent this message on behalf\nof {{company_name}}.\n"
)
_TEXT_FOOTER = "\n-- \n{{company_name}}, {{company_address}}\nQuestions? {{support_email}}\n"


def _shared(preheader_example: str) -> tuple[StarterVariable, ...]:
    """The variables every branded starter has, in e2a's order."""
    return (
        StarterVariable(
            "company_name",
            True,
            False,
            "Your company or product, shown as the heading above the message and in the footer.",
            "Northwind",
        ),
        StarterVariable(
            "support_email",
            True,
            False,
            "The address recipients can write to for help, shown in the footer.",
            "help@northwind.example",
        ),
        StarterVariable(
            "company_address",
            True,
            False,
            "Your postal address for the footer, as anti-spam laws such as CAN-SPAM require.",
            "12 Harbour Road, Leeds LS1 4AB, United Kingdom",
        ),
        StarterVariable(
            "preheader",
            False,
            False,
            "Optional preview line mail programs show beside the subject; it is hidden in "
            "the message itself.",
            preheader_example,
        ),
    )


def _agent_name(what: str) -> StarterVariable:
    return StarterVariable("agent_name", True, False, f"The agent {what}.", "ledger-agent")


def _sections(what: str, html_example: str, text_example: str) -> tuple[StarterVariable, ...]:
    """`sections_html` and `sections_text`: the body of a report, rendered by the caller."""
    return (
        StarterVariable(
            "sections_html",
            True,
            True,
            f"The {what} for the HTML part, as HTML you render: paragraphs or simple tables "
            "with inline styles, placed as they are below the heading. Inserted unescaped: "
            "escape any user-supplied text in it yourself.",
            html_example,
        ),
        StarterVariable(
            "sections_text",
            True,
            False,
            f"The same {what} as plain text for the text part, lines of at most 70 characters.",
            text_example,
        ),
    )


def _dashboard_url(what: str) -> StarterVariable:
    return StarterVariable(
        "dashboard_url",
        True,
        False,
        f"Link to {what}.",
        "https://app.northwind.example/agents/ledger-agent",
    )


_AGENT_STATUS = Starter(
    alias="agent-status",
    name="Agent status",
    description=(
        "A short, figures-first report an automated agent sends after a run: a one-line "
        "summary as the heading, report sections you render, and a link to the agent's "
        "dashboard. States that an agent sent it."
    ),
    version=VERSION,
    subject="{{agent_name}} report: {{run_summary}}",
    text=(
        "{{run_summary}}\n\n"
        "Run report from {{agent_name}}.\n\n"
        "{{sections_text}}\n\n"
        "Open the dashboard:\n"
        "{{dashboard_url}}\n\n" + _AGENT_NOTE_TEXT + _TEXT_FOOTER
    ),
    html=_branded(
        "Agent status",
        _heading("{{run_summary}}")
        + _muted("Run report from {{agent_name}}.")
        + '<div style="margin:0 0 24px;">{{{sections_html}}}</div>\n'
        + _paragraph(_button("{{dashboard_url}}", "Open the dashboard"))
        + _fallback("dashboard_url")
        + _AGENT_NOTE_HTML,
    ),
    variables=(
        *_shared("Reconciliation done: 86 payments matched, 1 left open."),
        _agent_name("sending the report"),
        StarterVariable(
            "run_summary",
            True,
            False,
            "What the run did, in one line that leads with the figures; also the heading.",
            "Reconciliation done: 86 payments matched, 1 left open",
        ),
        *_sections(
            "report",
            '<p style="margin:0 0 8px;"><strong>Matched</strong>: 86 payments</p>'
            '<p style="margin:0;"><strong>Open</strong>: 1 payment without an invoice</p>',
            "Matched: 86 payments\nOpen: 1 payment without an invoice",
        ),
        _dashboard_url("the agent's dashboard or the page of this run"),
    ),
)

_APPROVAL_REQUEST = Starter(
    alias="approval-request",
    name="Approval request",
    description=(
        "An automated agent asks a person to approve or reject an action before it goes "
        "ahead: the action in one line, a table of its details, Approve and Reject buttons "
        "with the plain links beneath, and when the request lapses. approve_url and "
        "reject_url must open confirmation pages, never act on a GET: mail scanners and link "
        "previews open every link in a message. States that an agent sent it."
    ),
    version=VERSION,
    subject="Decision needed: {{action_summary}}",
    text=(
        "{{action_summary}}\n\n"
        "{{agent_name}} is waiting for your decision before it goes ahead\n"
        "with this action. The request lapses at {{expires_at}};\n"
        "after that the action will not happen.\n\n"
        "{{details_text}}\n\n"
        "To approve, open:\n"
        "{{approve_url}}\n\n"
        "To reject, open:\n"
        "{{reject_url}}\n\n"
        "Each link opens a page where you confirm your choice; nothing\n"
        "happens until you do.\n\n" + _AGENT_NOTE_TEXT + _TEXT_FOOTER
    ),
    html=_branded(
        "Approval request",
        _heading("{{action_summary}}")
        + _paragraph(
            "{{agent_name}} is waiting for your decision before it goes ahead with this "
            "action. The request lapses at <strong>{{expires_at}}</strong>; after that the "
            "action will not happen."
        )
        + _rows_table("{{{details_html}}}")
        + _paragraph(
            _button("{{approve_url}}", "Approve", "#2e7d32")
            + "\n"
            + _button("{{reject_url}}", "Reject", "#c62828")
        )
        + _muted(
            "Each button opens a page where you confirm your choice; nothing happens until "
            "you do. Buttons not working? Approve: "
            f'<a href="{{{{approve_url}}}}" style="color:{_ACCENT};word-break:break-all;">'
            "{{approve_url}}</a><br>\nReject: "
            f'<a href="{{{{reject_url}}}}" style="color:{_ACCENT};word-break:break-all;">'
            "{{reject_url}}</a>"
        )
        + _AGENT_NOTE_HTML,
    ),
    variables=(
        *_shared("An action is waiting for your approval."),
        _agent_name("asking for approval"),
        StarterVariable(
            "action_summary",
            True,
            False,
            "The action awaiting a decision, in one line that leads with the figures; also "
            "the heading.",
            "Pay 3 supplier invoices totalling £4,820.00",
        ),
        StarterVariable(
            "details_html",
            True,
            True,
            "The action's details for the HTML part, as table rows you render: one <tr> per "
            "detail with two <td> cells, the label first and the value second (right-aligned "
            "reads best), inline styles only. Rows only: the template supplies the table. "
            "Inserted unescaped: escape any user-supplied text in it yourself.",
            f'<tr><td style="{_CELL}color:{_MUTED};">Amount</td>'
            f'<td style="{_CELL}text-align:right;">£4,820.00</td></tr>'
            f'<tr><td style="{_CELL}color:{_MUTED};">Payees</td>'
            f'<td style="{_CELL}text-align:right;">3 suppliers</td></tr>',
        ),
        StarterVariable(
            "details_text",
            True,
            False,
            "The same details as plain text for the text part, one 'label: value' per line, "
            "lines of at most 70 characters.",
            "Amount: £4,820.00\nPayees: 3 suppliers",
        ),
        StarterVariable(
            "approve_url",
            True,
            False,
            "Link for approving: it must open a page where the recipient confirms, never "
            "approve by itself when opened.",
            "https://app.northwind.example/approvals/req_51c9/approve",
        ),
        StarterVariable(
            "reject_url",
            True,
            False,
            "Link for rejecting: it must open a page where the recipient confirms, never "
            "reject by itself when opened.",
            "https://app.northwind.example/approvals/req_51c9/reject",
        ),
        StarterVariable(
            "expires_at",
            True,
            False,
            "When the request lapses and the action is dropped, written for people.",
            "14 May 2026, 17:00 UTC",
        ),
    ),
)

_DAILY_DIGEST = Starter(
    alias="daily-digest",
    name="Daily digest",
    description=(
        "A daily summary from an automated agent: a one-line headline, digest sections you "
        "render, a link to the agent's dashboard, and an unsubscribe link in the footer. "
        "States that an agent sent it."
    ),
    version=VERSION,
    subject="{{agent_name}} digest for {{date}}",
    text=(
        "{{headline}}\n\n"
        "Digest from {{agent_name}} for {{date}}.\n\n"
        "{{sections_text}}\n\n"
        "Open the dashboard:\n"
        "{{dashboard_url}}\n\n" + _AGENT_NOTE_TEXT + _TEXT_FOOTER
    ),
    html=_branded(
        "Daily digest",
        _heading("{{headline}}")
        + _muted("Digest from {{agent_name}} for {{date}}.")
        + '<div style="margin:0 0 24px;">{{{sections_html}}}</div>\n'
        + _paragraph(_button("{{dashboard_url}}", "Open the dashboard"))
        + _fallback("dashboard_url")
        + _AGENT_NOTE_HTML,
        "{{{unsubscribe_html}}}<br>\n",
    ),
    variables=(
        *_shared("86 payments matched yesterday, 1 needs a look."),
        _agent_name("sending the digest"),
        StarterVariable(
            "date",
            True,
            False,
            "The day the digest covers, written for people.",
            "13 May 2026",
        ),
        StarterVariable(
            "headline",
            True,
            False,
            "The day in one line that leads with the figures; also the heading.",
            "86 payments matched, 1 needs a look",
        ),
        *_sections(
            "digest",
            '<p style="margin:0 0 8px;"><strong>Payments</strong>: 86 matched, 0 failed</p>'
            '<p style="margin:0;"><strong>To check</strong>: 1 payment without an invoice</p>',
            "Payments: 86 matched, 0 failed\nTo check: 1 payment without an invoice",
        ),
        _dashboard_url("the agent's dashboard or the page of this digest"),
        StarterVariable(
            "unsubscribe_html",
            True,
            True,
            "The unsubscribe link for the footer, as HTML you render: one <a> element with "
            "inline styles, leading to this recipient's unsubscribe page. Inserted unescaped.",
            '<a href="https://app.northwind.example/digests/stop?r=7d2e" '
            f'style="color:{_MUTED};">Stop these digests</a>',
        ),
    ),
)

_PASSWORD_RESET = Starter(
    alias="password-reset",
    name="Password reset",
    description=(
        "A brief, neutral password reset message: one button to choose a new password, how "
        "long the link works, and what to do if the recipient did not ask for it."
    ),
    version=VERSION,
    subject="Your {{company_name}} password reset link",
    text=(
        "A password reset was requested for your {{company_name}} account.\n"
        "To choose a new password, open this link within {{expires_minutes}} minutes:\n\n"
        "{{action_url}}\n\n"
        "If you did not ask for this, you can ignore this message: your\n"
        "password stays as it is.\n" + _TEXT_FOOTER
    ),
    html=_branded(
        "Password reset",
        _heading("Choose a new password")
        + _paragraph(
            "A password reset was requested for your {{company_name}} account. The button "
            "below works for {{expires_minutes}} minutes."
        )
        + _paragraph(_button("{{action_url}}", "Choose a new password"))
        + _fallback("action_url")
        + _muted(
            "If you did not ask for this, you can ignore this message: your password stays "
            "as it is."
        ),
    ),
    variables=(
        *_shared("Choose a new password with the link inside; it works for a short while."),
        StarterVariable(
            "action_url",
            True,
            False,
            "The reset link, behind the button and written out beneath it.",
            "https://app.northwind.example/password/reset?t=q8Xc2v",
        ),
        StarterVariable(
            "expires_minutes",
            True,
            False,
            "How many minutes the link works, as a bare number.",
            "30",
        ),
    ),
)

_RECEIPT = Starter(
    alias="receipt",
    name="Receipt",
    description=(
        "A receipt for an order: its number and date, a table of line items with the total "
        "below them, and a link to the receipt online. The template supplies the table and "
        "the total row; items_html supplies the item rows only."
    ),
    version=VERSION,
    subject="Receipt for order {{order_id}} from {{company_name}}",
    text=(
        "Thank you for your order from {{company_name}}.\n\n"
        "Order {{order_id}}, {{order_date}}\n\n"
        "{{items_text}}\n\n"
        "Total: {{total}}\n\n"
        "Your receipt online:\n"
        "{{receipt_url}}\n" + _TEXT_FOOTER
    ),
    html=_branded(
        "Receipt",
        _heading("Thank you for your order")
        + _muted("Order {{order_id}} &middot; {{order_date}}")
        + _rows_table(
            "{{{items_html}}}",
            f'<tr><td style="padding:12px 0;border-top:1px solid {_RULE};font-weight:bold;">'
            "Total</td>"
            f'<td style="padding:12px 0;border-top:1px solid {_RULE};font-weight:bold;'
            'text-align:right;">{{total}}</td></tr>\n',
        )
        + _paragraph(_button("{{receipt_url}}", "View the receipt"))
        + _fallback("receipt_url"),
    ),
    variables=(
        *_shared("Your receipt for order NW-2291: £48.00."),
        StarterVariable("order_id", True, False, "The order's or invoice's reference.", "NW-2291"),
        StarterVariable(
            "order_date",
            True,
            False,
            "When the order was placed, written for people.",
            "13 May 2026",
        ),
        StarterVariable(
            "items_html",
            True,
            True,
            "The line items for the HTML part, as table rows you render: one <tr> per item "
            "with two <td> cells, the item (and quantity) first and its price second "
            "(right-aligned reads best), inline styles only. Rows only: the template supplies "
            "the table and the total row. Inserted unescaped: escape product names and other "
            "user-supplied text in it yourself.",
            f'<tr><td style="{_CELL}">2 &times; Desk lamp</td>'
            f'<td style="{_CELL}text-align:right;">£36.00</td></tr>'
            f'<tr><td style="{_CELL}">1 &times; Delivery</td>'
            f'<td style="{_CELL}text-align:right;">£12.00</td></tr>',
        ),
        StarterVariable(
            "items_text",
            True,
            False,
            "The same line items as plain text for the text part, one item per line, lines of "
            "at most 70 characters.",
            "2 x Desk lamp: £36.00\n1 x Delivery: £12.00",
        ),
        StarterVariable(
            "total", True, False, "The order's total, formatted with its currency.", "£48.00"
        ),
        StarterVariable(
            "receipt_url",
            True,
            False,
            "Link to the receipt or invoice online.",
            "https://app.northwind.example/orders/NW-2291/receipt",
        ),
    ),
)

_VERIFY_CODE = Starter(
    alias="verify-code",
    name="Verification code",
    description=(
        "A brief message carrying a one-time verification code, set in large monospace type "
        "the recipient can select and copy; no button, no links besides the footer's."
    ),
    version=VERSION,
    subject="Your {{company_name}} code: {{code}}",
    text=(
        "Your {{company_name}} verification code is:\n\n"
        "{{code}}\n\n"
        "Enter it where you were asked for it. It works for {{expires_minutes}} minutes.\n\n"
        "If you did not ask for a code, you can ignore this message.\n" + _TEXT_FOOTER
    ),
    html=_branded(
        "Verification code",
        _heading("Your verification code")
        + _paragraph("Enter this code where {{company_name}} asked you for it:")
        + _paragraph(
            '<span style="display:inline-block;padding:10px 18px;'
            "font-family:'Courier New',Courier,monospace;font-size:26px;letter-spacing:4px;"
            f'background-color:#f3f4f7;border:1px solid {_RULE};border-radius:6px;">'
            "{{code}}</span>"
        )
        + _paragraph("It works for {{expires_minutes}} minutes.")
        + _muted("If you did not ask for a code, you can ignore this message."),
    ),
    variables=(
        *_shared("Your code works for a few minutes."),
        StarterVariable("code", True, False, "The one-time code.", "730194"),
        StarterVariable(
            "expires_minutes",
            True,
            False,
            "How many minutes the code works, as a bare number.",
            "10",
        ),
    ),
)

_WELCOME = Starter(
    alias="welcome",
    name="Welcome",
    description=(
        "A short, friendly welcome for a new user with one button leading to the first thing to do."
    ),
    version=VERSION,
    subject="Your {{company_name}} account is ready",
    text=(
        "Hi {{recipient_name}},\n\n"
        "Welcome to {{company_name}}! Your account is set up, and one step\n"
        "gets you going:\n\n"
        "{{cta_label}}:\n"
        "{{cta_url}}\n\n"
        "If anything is unclear, reply to this message or write to the\n"
        "address below.\n" + _TEXT_FOOTER
    ),
    html=_branded(
        "Welcome",
        _heading("Welcome, {{recipient_name}}")
        + _paragraph("Your {{company_name}} account is set up, and one step gets you going:")
        + _paragraph(_button("{{cta_url}}", "{{cta_label}}"))
        + _fallback("cta_url")
        + _muted("If anything is unclear, reply to this message or write to the address below."),
    ),
    variables=(
        *_shared("Your account is ready: one step to get going."),
        StarterVariable(
            "recipient_name",
            True,
            False,
            "How to address the recipient: a first name or display name.",
            "Priya",
        ),
        StarterVariable(
            "cta_url",
            True,
            False,
            "Where the button leads: the first thing to do.",
            "https://app.northwind.example/start",
        ),
        StarterVariable(
            "cta_label",
            True,
            False,
            "The button's words.",
            "Set up your first project",
        ),
    ),
)

_FOLLOW_UP = Starter(
    alias="follow-up",
    name="Follow-up",
    description=(
        "A polite follow-up on an earlier message that has not had a reply, signed by a "
        "person. Offered by this gateway only; e2a has no such starter."
    ),
    version=VERSION,
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
    html=_document(
        "Follow-up",
        f'<div style="padding:24px 12px;background-color:{_PAGE};">\n'
        '<div style="max-width:560px;margin:0 auto;padding:24px;background-color:#ffffff;'
        f'border-radius:6px;{_FONT}font-size:15px;line-height:1.55;color:{_INK};">\n'
        + _paragraph("Hi {{recipient_name}},")
        + _paragraph(
            "I wanted to follow up on my earlier message about {{topic}}. Inboxes fill up "
            "quickly, so I am bringing it back to the top of yours."
        )
        + _paragraph("{{next_step}}")
        + _paragraph("If now is not a good time, just let me know and I will check back later.")
        + '<p style="margin:0;">Thanks,<br>{{sender_name}}</p>\n'
        "</div>\n"
        "</div>\n",
    ),
    variables=(
        StarterVariable("recipient_name", True, False, "How to address the recipient.", "Dana"),
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

STARTERS: tuple[Starter, ...] = (
    _AGENT_STATUS,
    _APPROVAL_REQUEST,
    _DAILY_DIGEST,
    _FOLLOW_UP,
    _PASSWORD_RESET,
    _RECEIPT,
    _VERIFY_CODE,
    _WELCOME,
)
"""The catalog, sorted by alias."""

_BY_ALIAS = {s.alias: s for s in STARTERS}


def starter(alias: str) -> Starter | None:
    """The starter called `alias`, or None if the catalog has none by that name."""
    return _BY_ALIAS.get(alias)
