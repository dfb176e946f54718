"""The frames between the main process and an SMTP acceptor: every error the main process
sends back to an acceptor (the storage errors its pipeline handles, MessageNotStored) arrives
as it was raised, over a real socket pair."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import trio

from e2a_gateway.inbound.acceptors import _Channel
from e2a_gateway.smtp.server import MessageNotStored
from e2a_gateway.storage.base import AgentInTrash, RateFull, RecipientsSuppressed, StorageError

pytestmark = pytest.mark.backend_independent

BUILT_WITH = {
    RecipientsSuppressed: lambda: RecipientsSuppressed(
        ["ann@example.org", "bo@example.net"], "bot@agents.test"
    ),
    AgentInTrash: lambda: AgentInTrash("bot@agents.test"),
    RateFull: lambda: RateFull(1_767_225_600.5),
}
"""How to raise the errors whose constructor takes something other than a message."""


def subclasses(cls: type[BaseException]) -> Iterator[type[BaseException]]:
    """`cls` and every class derived from it."""
    yield cls
    for sub in cls.__subclasses__():
        yield from subclasses(sub)


def example(cls: type[BaseException]) -> BaseException:
    """An instance of `cls` as the main process raises it."""
    if cls in BUILT_WITH:
        return BUILT_WITH[cls]()
    assert cls.__init__ is Exception.__init__, f"{cls.__name__}: add it to BUILT_WITH"
    return cls("the reason, with, commas")


CARRIED = sorted(
    {*subclasses(StorageError), *subclasses(MessageNotStored)}, key=lambda cls: cls.__name__
)


@pytest.mark.parametrize("cls", CARRIED, ids=lambda cls: cls.__name__)
async def test_an_error_sent_back_to_an_acceptor_arrives_as_raised(
    cls: type[BaseException],
) -> None:
    raised = example(cls)
    left, right = trio.socket.socketpair()
    async with trio.SocketStream(left) as main_end, trio.SocketStream(right) as acceptor_end:
        await _Channel(main_end).send(("result", 1, False, raised))
        frame = await _Channel(acceptor_end).receive()
    assert frame is not None
    arrived = frame[3]
    assert type(arrived) is cls
    assert str(arrived) == str(raised)
    assert arrived.args == raised.args
    assert vars(arrived) == vars(raised)
