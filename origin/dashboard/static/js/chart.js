// The clicks-and-uniques chart (uPlot, vendored).
import uPlot from '../vendor/uPlot.esm.js';
import { h } from './dom.js';

// seriesChart draws the stats series into a new element; call the
// returned destroy when leaving the page.
export function seriesChart(stats) {
  const el = h('div', { class: 'chart', role: 'img', 'aria-label': `Clicks and uniques per ${stats.interval}` });
  const xs = stats.series.map((p) => Date.parse(p.t) / 1000);
  const data = [xs, stats.series.map((p) => p.clicks), stats.series.map((p) => p.uniques)];
  const opts = {
    width: 600, height: 240,
    scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(1, max)] } },
    axes: [{}, { size: 50 }],
    series: [{}, { label: 'Clicks', stroke: '#2563eb', width: 2, fill: 'rgba(37,99,235,0.08)' }, { label: 'Uniques', stroke: '#db2777', width: 2 }],
  };
  let plot = null;
  const ro = new ResizeObserver(() => {
    const w = Math.max(260, el.clientWidth);
    if (!plot) plot = new uPlot({ ...opts, width: w }, data, el);
    else plot.setSize({ width: w, height: 240 });
  });
  ro.observe(el);
  return { el, destroy() { ro.disconnect(); if (plot) plot.destroy(); } };
}
