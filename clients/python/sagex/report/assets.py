"""The report's inline CSS and JS (no external resources: the file must open offline)."""

CSS = """
:root { --fg:#1f2328; --muted:#57606a; --line:#d0d7de; --bg:#fff; --soft:#f6f8fa; --hot:255,110,0; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); background: var(--bg);
       margin: 0 auto; max-width: 1180px; padding: 24px; }
h1 { font-size: 24px; margin: 0 0 4px; } h2 { font-size: 19px; margin: 28px 0 8px; }
h3 { font-size: 15px; margin: 18px 0 6px; }
a { color: #0969da; text-decoration: none; } a:hover { text-decoration: underline; }
.muted { color: var(--muted); }
table { border-collapse: collapse; width: 100%; margin: 6px 0 12px; }
th, td { border-bottom: 1px solid var(--line); padding: 5px 8px; text-align: left; vertical-align: top; }
th { background: var(--soft); font-weight: 600; cursor: default; }
table.index th[data-sort] { cursor: pointer; } table.index th[data-sort]:hover { background: #eaeef2; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.ci { color: var(--muted); font-size: 12px; }
.badge { display: inline-block; padding: 0 7px; border-radius: 10px; font-size: 12px; font-weight: 600;
         background: var(--soft); border: 1px solid var(--line); white-space: nowrap; }
.CONFIRMED { background: #dafbe1; border-color: #4ac26b; } .REFUTED { background: #ffebe9; border-color: #ff8182; }
.REFINED { background: #fff8c5; border-color: #d4a72c; } .PENDING { background: var(--soft); }
.control { background: #ddf4ff; border-color: #54aeff; }
.ok { color: #1a7f37; font-weight: 600; } .bad { color: #cf222e; font-weight: 600; }
section.feature { border-top: 3px solid var(--line); margin-top: 32px; }
.labels { margin: 6px 0; } .labels li { margin: 2px 0; }
.hm { font: 13px/1.9 ui-monospace, SFMono-Regular, Menlo, monospace; white-space: pre-wrap; word-break: break-word;
      padding: 4px 6px; background: var(--soft); border-radius: 4px; }
.tok { background: rgba(var(--hot), var(--a, 0)); border-radius: 2px; }
.tok.peak { outline: 1.5px solid rgb(var(--hot)); }
.lt { font: 13px ui-monospace, SFMono-Regular, Menlo, monospace; white-space: pre; padding: 0 4px; border-radius: 3px; }
.lt.up { background: #dafbe1; } .lt.down { background: #ffebe9; }
.timeline { display: flex; flex-wrap: wrap; gap: 6px; align-items: center; margin: 4px 0 8px; }
.timeline .step { border-left: 2px solid var(--line); padding-left: 6px; font-size: 12px; max-width: 520px; }
.hyp { margin: 10px 0; padding: 8px 10px; border: 1px solid var(--line); border-radius: 6px; }
.probe-row.mismatch td { background: #fff5f5; }
.legend { display: inline-block; width: 140px; height: 10px; vertical-align: middle; border-radius: 2px;
          background: linear-gradient(90deg, rgba(var(--hot),0), rgba(var(--hot),1)); }
svg.forest text { font: 12px system-ui, sans-serif; fill: var(--fg); } svg.forest .lim { fill: var(--muted); }
svg.forest .axis { stroke: var(--line); } svg.forest .zero { stroke: #8c959f; stroke-dasharray: 3 3; }
.controls { margin: 8px 0; } .controls input { padding: 4px 8px; width: 280px; }
body.only-mismatch .probe-row:not(.mismatch) { display: none; }
"""

# Sorting the index and filtering it; the page reads fine with JS off.
JS = """
(function () {
  var table = document.querySelector('table.index');
  if (table) {
    table.querySelectorAll('th[data-sort]').forEach(function (th, col) {
      th.addEventListener('click', function () {
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        var idx = Array.prototype.indexOf.call(th.parentNode.children, th);
        var dir = th.dataset.dir === 'asc' ? -1 : 1;
        th.dataset.dir = dir === 1 ? 'asc' : 'desc';
        rows.sort(function (a, b) {
          var x = a.cells[idx].dataset.v, y = b.cells[idx].dataset.v;
          var nx = parseFloat(x), ny = parseFloat(y);
          if (!isNaN(nx) && !isNaN(ny)) return dir * (nx - ny);
          return dir * String(x).localeCompare(String(y));
        });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
    var filter = document.getElementById('filter');
    if (filter) {
      filter.addEventListener('input', function () {
        var q = filter.value.toLowerCase();
        Array.prototype.forEach.call(table.tBodies[0].rows, function (r) {
          r.style.display = r.textContent.toLowerCase().indexOf(q) >= 0 ? '' : 'none';
        });
      });
    }
  }
  var mismatch = document.getElementById('only-mismatch');
  if (mismatch) {
    mismatch.addEventListener('change', function () {
      document.body.classList.toggle('only-mismatch', mismatch.checked);
    });
  }
})();
"""
