"""The ACL list in code is the one docs/kafka-production.md shows, and Kafka's authorization errors are
turned into messages naming the missing ACL."""

from __future__ import annotations

import re

from aiokafka.errors import GroupAuthorizationFailedError, KafkaConnectionError, TransactionalIdAuthorizationFailed

from service.kafka_access import denied, required_acls
from service.settings import Settings
from tests.support import ROOT

SETTINGS = Settings(token_key="x", admin_token="y")  # type: ignore[arg-type]
ROW = re.compile(r"^\| (\w+) \| ([a-z ]+) \| `([^`]+)` \| (literal|prefixed) \|$", re.MULTILINE)


def test_the_production_page_lists_exactly_the_acls_of_the_code() -> None:
    """Every row of the page's ACL table is an ACL of required_acls (default names), and none is missing."""
    page = (ROOT / "docs" / "kafka-production.md").read_text()
    rows = ROW.findall(page)
    expected = [
        (a.operation.title, a.resource.name.lower().replace("_", " "), a.name, a.pattern.name.lower())
        for a in required_acls(SETTINGS)
    ]
    assert rows == expected


def test_an_authorization_error_names_the_acl() -> None:
    """A group or transactional-id refusal becomes the ACL (operation and resource); other errors do not."""
    group = denied(SETTINGS, GroupAuthorizationFailedError("outbound-scim.apply"))
    assert group is not None and [str(a) for a in group.missing] == ["Read on group outbound-scim.apply"]
    assert "Read on group outbound-scim.apply: stage 2's consumer group" in str(group)
    txn = denied(SETTINGS, TransactionalIdAuthorizationFailed("outbound-scim.rekey-pod-0"))
    assert txn is not None and [str(a) for a in txn.missing] == [
        "Write on transactional id outbound-scim.rekey- (prefixed)"
    ]
    assert denied(SETTINGS, KafkaConnectionError("down")) is None
