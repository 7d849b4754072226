"""The tools' texts: descriptions of each tool and of the arguments that share one.

Every client sends the whole tools/list to its model on every turn, so they are short;
tests/clients/test_tool_texts.py keeps every argument described and the whole list within
10 KB. Each says what the tool does, when to use it (and not), what it writes and bills,
and what comes back.
"""

from __future__ import annotations

GENERATE_DOC = (
    "Make images from a prompt with any model (see list_available_models). Billed per image "
    "(dry_run: free quote); saves files + JSON sidecars. Returns previews, resource links, applied "
    "parameters, cost. Unsupported parameters are refused unbilled; calls past 45 s become jobs. "
    "To change an image: edit_image."
)
EDIT_DOC = (
    "Change images (mask inpainting, combining, restyling) with a model that can edit; billed, "
    "saved and returned as generate. Several rounds on one picture: edit_session."
)
MODEL_DOC = "Model id or alias."
COMPRESSION_DOC = "jpeg/webp; 100 = least compressed."
IMAGES_DOC = "First is edited: path, URL, data URL, base64, atelier:// URI."
MASK_DOC = "PNG; transparent = area to change."
SAME = "As generate."
TURN = "As edit_image."
IDEMPOTENCY_DOC = "A repeat returns the first result, unbilled."
AS_JOB_DOC = "Reply at once with a job id."
WAIT_DOC = "Wait up to this (max 45 s) for all to end."
GET_JOBS_DOC = (
    "Status and results of background jobs (as_job, or calls past 45 s); finished ones return "
    "images like the call. Barrier: wait_s without job_ids waits for all unfinished jobs. "
    "Bills nothing."
)
CANCEL_JOB_DOC = (
    "Cancel a background job: a queued one is never sent; a running one is abandoned but may "
    "still be billed. Returns its state."
)
LIST_DOC = (
    "Model catalogue; call before generating. Default: a summary per model (available or why not, "
    "operations, formats, price); model, provider, detail=true: everything. Bills nothing."
)
SESSION_DOC = (
    "Iterative edits of one picture, kept across restarts: start (prompt or image), then continue "
    "with short prompts, editing the latest turn or from_turn (a branch). Turns are billed and "
    "saved like edit_image; settings carry over. history, list, end bill nothing."
)
SESSION_ACTION_DOC = "What to do."
USAGE_DOC = "Spend (USD) by day, provider and model, and the limits. Bills nothing."
HEALTH_DOC = (
    "Is the server ready? Usable models (or why not), plugin problems, folders, jobs, spend vs "
    "limits. Sends and bills nothing."
)
