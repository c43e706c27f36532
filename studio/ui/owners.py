"""Who is asking: each browser's owner id, and whether the studio is shared with other people.

A studio bound to the loopback interface is one artist's own: every job and data set is theirs, and
the machine's Hugging Face token may be used. A studio on any other address (``0.0.0.0``, a Space) is
shared: each browser gets a random owner id, kept in its local storage across reloads, and every event
acts on that owner's jobs and data sets only. The id is a bearer secret (192 random bits): an event
that names someone else's job is refused as if the job did not exist, so hiding a button is never
what protects anything.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import secrets

from studio.storage import atomic_write, browser_secret_file

OWNER = re.compile(r"[A-Za-z0-9_-]{32}")
NO_OWNER = "This browser has no studio identity yet: reload the page."
# "u" + 10 hex digits + "-": what a shared studio puts before each owner's data set names.
OWNER_TAG_LENGTH = 12


def is_shared(host: str) -> bool:
    """Whether a studio bound to ``host`` serves other people: any non-loopback bind, or a Space."""
    if os.environ.get("SPACE_ID"):
        return True
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything, so it counts as shared
        return True


def new_owner(current: str | None) -> str:
    """``current`` if it is a well-formed owner id, else a fresh random one."""
    return current if isinstance(current, str) and OWNER.fullmatch(current) else secrets.token_urlsafe(24)


def owner_of(value: object, shared: bool) -> str | None:
    """The owner an event acts for: None (everyone's) in a studio of one's own, else the browser's id.

    Raises:
        ValueError: A shared studio got no well-formed owner id (a page not yet loaded, or a forged call).
    """
    if not shared:
        return None
    if isinstance(value, str) and OWNER.fullmatch(value):
        return value
    raise ValueError(NO_OWNER)


def dataset_name(owner: str | None, name: str) -> str:
    """The stored name of an owner's data set ``name``: prefixed in a shared studio, so no two owners' meet."""
    if owner is None:
        return name
    return f"u{hashlib.sha256(owner.encode()).hexdigest()[:OWNER_TAG_LENGTH - 2]}-{name}"


def browser_secret() -> str:
    """The key that encrypts owner ids in the browsers' storage, kept in the studio's home.

    It must outlive a restart: with a new key every browser would lose its id, and with it its jobs.
    """
    path = browser_secret_file()
    if not path.is_file():
        key = secrets.token_urlsafe(32)
        atomic_write(path, lambda tmp: (tmp.chmod(0o600), tmp.write_text(key)))  # private before it holds the key
    return path.read_text().strip()
