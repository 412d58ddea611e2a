"""Plans (pure): ``inventory`` (what the host has), ``model`` (Plan/PlanStep, JSON),
``planner`` (spec + inventory → Plan), ``render`` (human text).

Nothing is re-exported here so that importing one module does not import the others.
"""
