// Time charts (uPlot, vendored) with a legend of the latest values, and plain HTML bars.
//
// Every chart writes what it shows into data- attributes (points, latest values), which is
// what the browser test reads: the canvas itself is pixels.

import { lastValue } from "./series.js";

export const COLORS = {
  member: "#2563eb",
  analytics: "#9333ea",
  statistics: "#0d9488",
  lookup: "#ea580c",
  default: "#64748b",
  "all types": "#dc2626",
  used: "#2563eb",
  maxmemory: "#dc2626",
  backlog: "#0d9488",
  lag: "#d97706",
};
const FALLBACK = ["#2563eb", "#9333ea", "#0d9488", "#ea580c", "#64748b"];
const HEIGHT = 200;

export const colorOf = (label, i) => COLORS[label] ?? FALLBACK[i % FALLBACK.length];

// Distinct colours by position, for series named by data (the kinds of the latency history).
const PALETTE = ["#2563eb", "#9333ea", "#0d9488", "#ea580c", "#db2777", "#65a30d", "#64748b"];
export const paletteOf = (i) => PALETTE[i % PALETTE.length];

const el = (tag, className, text) => {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
};

// Tick steps of 1, 2, 4, 8 ... KiB, MiB, GiB: byte axes read 16 MiB, 32 MiB, not 19.1 MiB.
export const BYTE_STEPS = [1, 2, 3].flatMap((power) =>
  [1, 2, 4, 8, 16, 32, 64, 128, 256, 512].map((step) => step * 1024 ** power),
);

// From zero to a little above the largest value; `floor` keeps a flat line off the top.
export const fromZero =
  (floor = 1) =>
  (_u, _min, max) => [0, Math.max(floor, (max ?? 0) * 1.15)];

// A log axis over the whole decades around the values (1e-4..1 before there are any).
const logRange = (_u, min, max) =>
  min === null || max === null || !(min > 0)
    ? [1e-4, 1]
    : uPlot.rangeLog(min, max, 10, true);

export class TimeChart {
  // format: value -> text, for the axis (and the legend, unless `legend` is given). range:
  // the y axis's uPlot range ([min, max] or a function). second: {label, range, format} to
  // put one series on a right-hand axis of its own. incrs: the y axis's tick steps. log: a
  // logarithmic y axis (values > 0; range is then ignored). style: (label, i) -> {stroke,
  // dash} for the series whose colour or dash is not the label's own.
  constructor(
    figure,
    {
      format,
      legend = format,
      range = fromZero(),
      second = null,
      incrs,
      height = HEIGHT,
      log = false,
      style = null,
    },
  ) {
    this.figure = figure;
    this.log = log;
    this.style = style;
    this.incrs = incrs;
    this.height = height;
    this.format = format;
    this.legendFormat = legend;
    this.range = range;
    this.second = second;
    this.labels = null;
    this.plot = null;
    this.canvas = el("div", "plot");
    this.legend = el("ul", "legend");
    this.empty = el("p", "empty", "Waiting for snapshots…");
    figure.replaceChildren(this.canvas, this.legend, this.empty);
    new ResizeObserver(() => this.plot?.setSize(this.size())).observe(figure);
  }

  size() {
    return { width: Math.max(200, this.figure.clientWidth), height: this.height };
  }

  look(label, i) {
    const custom = this.style?.(label, i) ?? {};
    return {
      stroke: custom.stroke ?? colorOf(label, i),
      dash: custom.dash ?? (label === "maxmemory" ? [6, 4] : undefined),
    };
  }

  legendFormatOf(label) {
    return label === this.second?.label ? this.second.format : this.legendFormat;
  }

  options(labels) {
    const axis = (scale, format, side, incrs) => ({
      scale,
      incrs,
      side,
      size: 64,
      stroke: "#6b7785",
      grid: { stroke: "#eef1f5", show: side === 3 },
      ticks: { show: false },
      values: (_u, ticks) => ticks.map(format),
    });
    const scales = {
      x: { time: true },
      y: this.log ? { distr: 3, log: 10, range: logRange } : { range: this.range },
    };
    const axes = [
      { stroke: "#6b7785", grid: { stroke: "#eef1f5" }, ticks: { show: false } },
      axis("y", this.format, 3, this.incrs),
    ];
    if (this.second) {
      scales.y2 = { range: this.second.range };
      axes.push(axis("y2", this.second.format, 1));
    }
    return {
      ...this.size(),
      legend: { show: false },
      cursor: { drag: { x: false, y: false } },
      scales,
      axes,
      series: [
        {},
        ...labels.map((label, i) => ({
          label,
          scale: label === this.second?.label ? "y2" : "y",
          ...this.look(label, i),
          width: 2,
          points: { show: false },
        })),
      ],
    };
  }

  // {times, labels, columns}: times in seconds, one column of values per label.
  update({ times, labels, columns }) {
    const key = labels.join("|");
    if (this.labels !== key) {
      this.plot?.destroy();
      this.plot = new uPlot(this.options(labels), [times, ...columns], this.canvas);
      this.labels = key;
    } else {
      this.plot.setData([times, ...columns]);
    }
    const plotted = columns.some((column) => column.some((value) => value !== null));
    this.empty.hidden = plotted;
    this.figure.dataset.points = String(times.length);
    this.figure.dataset.series = labels.join(",");
    this.legend.replaceChildren(
      ...labels.map((label, i) => {
        const latest = lastValue(columns[i]);
        const format = this.legendFormatOf(label);
        const item = el("li");
        item.dataset.series = label;
        item.dataset.value = latest === null ? "" : String(latest);
        const swatch = el("span", "swatch");
        swatch.style.background = this.look(label, i).stroke;
        item.append(swatch, el("span", "name", label), el("b", "", format(latest)));
        return item;
      }),
    );
  }
}

// Horizontal bars: rows of {label, value, text, group?}; widths relative to the largest.
export function bars(container, rows, { empty = "No data yet" } = {}) {
  if (!rows.length) {
    container.replaceChildren(el("p", "empty", empty));
    return;
  }
  const largest = Math.max(...rows.map((row) => row.value ?? 0), Number.MIN_VALUE);
  container.replaceChildren(
    ...rows.map((row, i) => {
      const line = el("div", "bar");
      line.dataset.label = row.label;
      line.dataset.value = row.value === null ? "" : String(row.value);
      if (row.group) line.dataset.group = row.group;
      const fill = el("span", "fill");
      fill.style.width = `${(100 * (row.value ?? 0)) / largest}%`;
      fill.style.background = row.color ?? colorOf(row.label, i);
      const track = el("span", "track");
      track.append(fill);
      line.append(el("span", "name", row.label), track, el("span", "num", row.text));
      return line;
    }),
  );
}

export { el };
