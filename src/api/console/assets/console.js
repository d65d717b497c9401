// flowpilot console: charts from the JSON a page embeds. Pages read without
// this script (each chart has a table beside it); it only draws.
"use strict";
(function () {
  function draw() {
    if (typeof uPlot === "undefined") return;
    document.querySelectorAll("div.chart[data-series]").forEach(function (el) {
      if (el.dataset.drawn) return;
      var src = document.getElementById(el.dataset.series);
      if (!src) return;
      var d = JSON.parse(src.textContent);
      var series = [{}].concat(d.labels.map(function (l, i) {
        return { label: l, stroke: d.colors[i], width: 2, scale: d.scales ? d.scales[i] : "y" };
      }));
      var axes = [{}, { scale: "y", label: d.labels[0] }];
      if (d.scales) axes.push({ scale: d.scales[d.scales.length - 1], side: 1, grid: { show: false },
                                label: d.labels[d.labels.length - 1] });
      var width = Math.max(280, Math.min(el.clientWidth || 800, 1100));
      el.dataset.drawn = "1";
      new uPlot({ width: width, height: 200, series: series, axes: axes,
                  scales: { x: { time: true } } }, [d.x].concat(d.y), el);
    });
  }
  document.addEventListener("DOMContentLoaded", draw);
  document.addEventListener("htmx:afterSwap", draw);
})();
