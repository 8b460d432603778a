"""The evaluation's parts that the runner (`tfnode.evaluate`) and the merge of shards
share, and the merge itself (the runner moves here as the regrouping goes on:
docs/architecture.md)."""
