"""The approval role: requests, approvals, the k-of-n quorum arithmetic and approver receipts."""
