from __future__ import annotations
async def case_fanout(ctx): return []
