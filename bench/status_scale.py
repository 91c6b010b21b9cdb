from __future__ import annotations
async def case_status_scale(ctx): return []
