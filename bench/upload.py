from __future__ import annotations
async def case_upload(ctx): return []
