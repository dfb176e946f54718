"""Managed unsubscribe in the mail itself: a message that opts in (`"unsubscribe": {"mode":
"managed"}`) gets a short visible footer linking to its `/u/{token}` page, in its text and its
HTML, and RFC 8058's one-click fields (`mime.build_message` writes them, before DKIM signing).
Pure: the link is made and stored elsewhere.
"""

from __future__ import annotations

import dataclasses
import re
from html import escape

from e2a_gateway.outbound.mime import Draft

MANAGED = "managed"
"""The one mode e2a's UnsubscribeOptions has: the gateway hosts the link and its page."""
ONE_CLICK = "List-Unsubscribe=One-Click"
"""RFC 8058: the body of the POST a mail provider makes, and the `List-Unsubscribe-Post`."""
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)


def unsubscribe_url(public_url: str, token: str) -> str:
    """The link of `token` on the gateway's public address (`http.public_url`)."""
    return f"{public_url.rstrip('/')}/u/{token}"


def text_footer(url: str, agent_email: str) -> str:
    """The footer under a text part: who sends, and the link."""
    return f"\n\n--\nUnsubscribe from emails sent by {agent_email}: {url}\n"


def html_footer(url: str, agent_email: str) -> str:
    """The footer of an HTML part: a small paragraph with the link, its values escaped."""
    return (
        '<p style="font-size:12px;color:#666;margin-top:24px;">'
        f'<a href="{escape(url)}">Unsubscribe</a> from emails sent by {escape(agent_email)}</p>'
    )


def with_unsubscribe(draft: Draft, url: str, agent_email: str) -> Draft:
    """`draft` with the footer linking to `url` under its text and in its HTML (before
    `</body>` when it has one), and `url` as its `List-Unsubscribe`."""
    html = draft.html
    if html:
        footer = html_footer(url, agent_email)
        ends = list(_BODY_END.finditer(html))
        if ends:
            at = ends[-1].start()
            html = html[:at] + footer + html[at:]
        else:
            html = html + footer
    return dataclasses.replace(
        draft,
        text=draft.text.rstrip("\n") + text_footer(url, agent_email),
        html=html,
        list_unsubscribe=url,
    )
