"""Analysis over evaluation reports: sweep (operating points), Pareto fronts, budgets, intervals, compare, plots."""
