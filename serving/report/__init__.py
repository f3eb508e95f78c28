"""The stakeholder report: one self-contained HTML page on what drives value and what social data adds."""
