"""Reading the record: round history from the contract's events, a round's inputs from the store."""
