"""The report: the comparison's statistics, its ordered sections (each with its text and its figures), the figures,
and one document rendered as Markdown and HTML. Add a report section in sections.py (one entry)."""
