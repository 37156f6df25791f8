from services.budget.app import rt
from shared.streams import run_worker

run_worker(rt)
