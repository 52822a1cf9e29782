"""Pure decisions: no Kafka, no HTTP, no awaits. Time is passed in."""
