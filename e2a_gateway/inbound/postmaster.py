"""Mail for postmaster (RFC 5321 section 4.5.1) and abuse (RFC 2142): which addresses name
them, and which agent receives it. Such mail is never refused for want of a mailbox.

An agent at the exact address (a custom domain's owner may register postmaster@ it) receives
its own mail; otherwise `postmaster.deliver_to`, else the postmaster inbox — an agent the
gateway creates for the first user at `postmaster@<shared_domain>` (or `smtp.hostname`).
"""

from __future__ import annotations

import logging
from typing import Protocol

from e2a_gateway.addresses import a_label_domain
from e2a_gateway.clock import utc_now
from e2a_gateway.config import Settings
from e2a_gateway.smtp.protocol import Mailbox
from e2a_gateway.storage.base import Accounts, Agent, AlreadyExists, Directory

log = logging.getLogger("e2a.inbound")

POSTMASTER = "postmaster"
OPERATOR_MAILBOXES = frozenset({POSTMASTER, "abuse"})
"""Local parts whose mail reaches the gateway's operator on every domain it serves: postmaster,
which RFC 5321 requires, and abuse (RFC 2142), where complaints about an agent's mail go."""
INBOX_HITL_TTL_SECONDS = 604_800
"""The approval window the inbox gets, as agents registered over the API (HITL starts off)."""


class PostmasterRecords(Accounts, Directory, Protocol):
    """What finding the postmaster agent needs: agents (`Directory`) and, to own the inbox,
    the first user (`Accounts`)."""


class NoPostmaster(Exception):
    """No agent can receive postmaster mail yet: there is no user to own the inbox."""


def names_postmaster(mailbox: Mailbox) -> bool:
    """True for `postmaster@…` or `abuse@…` (OPERATOR_MAILBOXES) in any case: RFC 5321 treats
    the local part case-blindly."""
    return mailbox.local.lower() in OPERATOR_MAILBOXES


def is_own_hostname(settings: Settings, domain: str) -> bool:
    """True when `domain` is `smtp.hostname`, where `RCPT TO:<postmaster>` points (lowercased
    as it is, when it is no valid domain name: an underscore, say)."""
    try:
        return domain == a_label_domain(settings.smtp.hostname)
    except ValueError:
        return domain == settings.smtp.hostname.lower()


def inbox_address(settings: Settings) -> str:
    """`postmaster@<shared_domain>`, or `postmaster@<smtp.hostname>` without a shared domain."""
    domain = settings.shared_domain or a_label_domain(settings.smtp.hostname)
    return f"{POSTMASTER}@{domain}"


async def postmaster_agent(settings: Settings, storage: PostmasterRecords) -> Agent:
    """The agent that receives postmaster mail: `postmaster.deliver_to` when it names an
    agent, else the postmaster inbox, created for the first user if need be.

    Raises NoPostmaster when there is no such agent and no user to own one."""
    configured = settings.postmaster.deliver_to
    if configured:
        agent = await storage.find_agent(configured)
        if agent is not None:
            return agent
        log.warning(
            "postmaster.deliver_to %s is not an agent of this gateway: postmaster mail goes to "
            "%s instead — register that agent or change the setting",
            configured,
            inbox_address(settings),
        )
    return await _inbox(settings, storage)


async def _inbox(settings: Settings, storage: PostmasterRecords) -> Agent:
    address = inbox_address(settings)
    found = await storage.find_agent(address)
    if found is not None:
        return found
    owner = await storage.first_user()
    if owner is None:
        raise NoPostmaster(
            "no user owns the postmaster inbox yet — run `e2a bootstrap` or set "
            "postmaster.deliver_to"
        )
    inbox = Agent(
        email=address,
        user_id=owner.id,
        domain=address.rpartition("@")[2],
        name="Postmaster",
        webhook_url=None,
        agent_mode="local",
        hitl_enabled=False,
        hitl_ttl_seconds=INBOX_HITL_TTL_SECONDS,
        hitl_expiration_action="reject",
        created_at=utc_now(),
    )
    try:
        await storage.add_agent(inbox)
    except AlreadyExists:  # created meanwhile, by another session or replica
        found = await storage.find_agent(address)
        if found is not None:
            return found
        raise
    log.info("created the postmaster inbox %s for %s", address, owner.email)
    return inbox
