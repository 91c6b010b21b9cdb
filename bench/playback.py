from __future__ import annotations
async def case_playback(ctx): return []
