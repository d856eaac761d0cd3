"""Reports: statistics over result rows (paired differences, intervals, trends), markdown
summaries, figures and the analyses ``report --analysis`` runs.
"""
