"""Everything steward remembers: the ledger, checkpoints, working memory."""
