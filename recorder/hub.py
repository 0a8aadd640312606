"""Push an exported LeRobot dataset folder to the Hugging Face hub (token from HF_TOKEN or `hf auth login`)."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from recorder.export_lerobot import CODEBASE_VERSION


class HubError(RuntimeError):
    pass


def push_to_hub(folder: Path, repo_id: str, *, private: bool = True, token: str | None = None,
                commit_message: str = "Upload dataset from aloha-workbench",
                progress: Callable[[str, float], None] | None = None, repo_type: str = "dataset") -> str:
    """Upload `folder` (a LeRobot v3.0 export) as dataset `repo_id`, tag it with the codebase version,
    and return the repo URL. Raises HubError with the fix when offline, unauthenticated or refused.

    Files are uploaded one by one (`preupload_lfs_files`), then committed together: `progress(text, fraction)`
    reports bytes sent, and an exception raised from it (a cancel) stops before the commit, so the dataset on the
    hub never shows a half upload."""
    import huggingface_hub as hf
    from huggingface_hub import errors as hf_errors

    folder = Path(folder)
    if repo_type == "dataset" and not (folder / "meta" / "info.json").exists():
        raise HubError(f"{folder} is not a LeRobot export (no meta/info.json); run `workbench episodes export` first")
    token = token or hf.get_token()
    if not token:
        raise HubError("no Hugging Face token: run `hf auth login` or set HF_TOKEN")
    api = hf.HfApi(token=token)
    report = progress or (lambda text, fraction: None)
    try:
        url = api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        total = max(sum(p.stat().st_size for p in files), 1)
        ops, sent = [], 0
        for p in files:
            rel = p.relative_to(folder).as_posix()
            report(f"uploading {rel}", sent / total)
            op = hf.CommitOperationAdd(path_in_repo=rel, path_or_fileobj=str(p))
            api.preupload_lfs_files(repo_id, additions=[op], repo_type=repo_type)
            ops.append(op)
            sent += op.upload_info.size
        report(f"committing {len(ops)} files", 1.0)
        api.create_commit(repo_id, operations=ops, commit_message=commit_message, repo_type=repo_type)
        try:
            if repo_type != "dataset":  # the codebase-version tag is LeRobot's, for datasets
                return str(url)
            api.create_tag(repo_id, tag=CODEBASE_VERSION, repo_type="dataset")
        except hf_errors.HfHubHTTPError as e:
            if getattr(e.response, "status_code", None) != 409:  # tag already there
                raise
    except hf_errors.OfflineModeIsEnabled as e:
        raise HubError(f"Hugging Face offline mode is on (HF_HUB_OFFLINE); unset it to push. ({e})") from e
    except hf_errors.HfHubHTTPError as e:
        code = getattr(e.response, "status_code", None)
        hint = {401: "the token is invalid", 403: "the token may not write to this repo"}.get(code, "")
        raise HubError(f"the hub refused the upload of {repo_id} ({code}{': ' + hint if hint else ''}): {e}") from e
    except (OSError, ConnectionError) as e:
        raise HubError(f"cannot reach the Hugging Face hub ({type(e).__name__}: {e}); are you offline? "
                       f"The export stays at {folder}; push again later.") from e
    except Exception as e:  # httpx / requests connection errors do not share a base class with OSError
        if "connect" in type(e).__name__.lower() or "timeout" in type(e).__name__.lower():
            raise HubError(f"cannot reach the Hugging Face hub ({type(e).__name__}: {e}); are you offline? "
                           f"The export stays at {folder}; push again later.") from e
        raise
    return str(url)
