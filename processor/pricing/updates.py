"""Opt-in updates of the price catalog (``TOKENTRAIL_PRICES_AUTO_UPDATE``): genai-prices' own background updater,
except that a failed fetch keeps the prices in use and is reported once.

Pricing never waits for an update: ``Pricer`` notices a new snapshot and resolves its prices again.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import genai_prices
from genai_prices import data_snapshot as _snapshot

__all__ = ["start_auto_update", "stop_auto_update"]

log = logging.getLogger(__name__)

_BUNDLED = f"genai-prices {genai_prices.__version__}"

_update_lock = threading.Lock()
_updater: Any = None
_warned_offline = False
_quiet = threading.local()


class _QuietAfterFallback(logging.Filter):
    """The library logs "Successfully fetched ..." even when our fetch fell back: drop that one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(_quiet, "skip_success", False) and record.getMessage().startswith("Successfully fetched"):
            _quiet.skip_success = False
            return False
        return True


def _updater_class() -> type:
    from genai_prices.update_prices import UpdatePrices  # it loads httpx2: only when updates are on

    class _FallbackUpdatePrices(UpdatePrices):
        """The library's updater, except that a failed fetch keeps the prices in use (bundled or last fetched)
        and is reported once, not every interval."""

        def fetch(self) -> Any:
            global _warned_offline
            try:
                return super().fetch()
            # Any failed fetch (network, HTTP, a bad payload) keeps the prices in use; it is logged below, once.
            except Exception as exc:  # noqa: BLE001 - see above
                if not _warned_offline:
                    _warned_offline = True
                    log.warning(
                        "price catalog update failed (%s: %s); using the %s price data (said once; retried every "
                        "%.0f s)",
                        type(exc).__name__,
                        exc,
                        "last fetched" if _snapshot.get_snapshot().from_auto_update else f"bundled {_BUNDLED}",
                        self.update_interval,
                    )
                _quiet.skip_success = True
                current = _snapshot.get_snapshot()
                return current if current.from_auto_update else None

    return _FallbackUpdatePrices


def start_auto_update(*, url: str | None = None, update_interval: float = 3600, wait: float | bool = False) -> Any:
    """Starts the catalog's background updater (idempotent); returns it. Prices never wait for it: until a fetch
    succeeds (and whenever one fails) the bundled or last fetched data stays in use, and ``Pricer`` re-resolves
    its prices when the data changes (``price_version`` then names the fetch time)."""
    global _updater
    with _update_lock:
        if _updater is None:
            logging.getLogger("genai-prices").addFilter(_QuietAfterFallback())
            kwargs: dict[str, Any] = {"update_interval": update_interval}
            if url is not None:
                kwargs["url"] = url
            _updater = _updater_class()(**kwargs)
            _updater.start()
            log.info("price catalog auto-update on (every %.0f s)", update_interval)
        updater = _updater
    if wait:
        # Never raises a fetch error: our fetch reports a failure and returns the data in use instead.
        updater.wait(30 if wait is True else wait)
    return updater


def stop_auto_update() -> None:
    """Stops the updater started by ``start_auto_update`` (fetched prices stay in use)."""
    global _updater
    with _update_lock:
        if _updater is not None:
            _updater.stop()
            _updater = None
