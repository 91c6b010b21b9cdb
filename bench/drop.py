from __future__ import annotations
async def case_drop_latency(ctx): return []
