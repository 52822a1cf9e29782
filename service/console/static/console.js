// The console's only script: refreshes the parts that change on their own (the activity table, the
// backfill's progress bar) in place. Every page works without it; it only saves a reload.
"use strict";

const EVERY_MS = 4000;

async function refreshActivity(tbody) {
  const answer = await fetch(tbody.dataset.refresh, { credentials: "same-origin", headers: { Accept: "text/html" } });
  if (answer.ok) {
    const rows = new DOMParser().parseFromString(`<table><tbody>${await answer.text()}</tbody></table>`, "text/html");
    tbody.replaceChildren(...rows.querySelectorAll("tbody > tr"));
  }
}

async function refreshBackfill(box) {
  const answer = await fetch(box.dataset.refresh, { credentials: "same-origin", headers: { Accept: "application/json" } });
  if (!answer.ok) return true;
  const progress = await answer.json();
  const bar = box.querySelector("progress");
  bar.max = progress.total || Math.max(progress.done, 1);
  bar.value = progress.done;
  const of = progress.total ? ` of ${progress.total}` : "";
  box.querySelector("#backfill-text").textContent =
    `${progress.state}: ${progress.done}${of} users` + (progress.error ? ` (${progress.error})` : "");
  box.hidden = false;
  return progress.state === "running";
}

// Calls refresh(element) every few seconds until it answers false (a backfill that ended).
function every(element, refresh) {
  if (!element) return;
  const tick = () =>
    refresh(element)
      .catch(() => true)
      .then((again) => again !== false && setTimeout(tick, EVERY_MS));
  setTimeout(tick, EVERY_MS);
}

document.addEventListener("DOMContentLoaded", () => {
  every(document.querySelector("#activity-rows[data-refresh]"), refreshActivity);
  every(document.querySelector("#backfill[data-running]"), refreshBackfill);
});
