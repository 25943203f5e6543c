"""Task events: relaying the outbox to EventBridge."""
