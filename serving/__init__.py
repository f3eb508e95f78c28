"""Serving: the clv command line, the batch scorer (scoring/) and the stakeholder report (report/)."""
