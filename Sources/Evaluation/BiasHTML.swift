import Foundation

extension BiasReport {
    /// One self-contained HTML page (inline CSS and SVG, nothing fetched) for one suite's
    /// reports side by side (plain, and self-debiased with `--compare`): a chart per overall
    /// metric, a chart per metric across groups, each with its ideal value marked, and the
    /// figures as tables.
    public static func html(_ reports: [BiasReport], model: String) -> String {
        guard let first = reports.first else { return "" }
        let colors = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759"]
        var body = "<h1>Bias audit: \(escape(first.suite))</h1>\n<p class=meta>Model <code>\(escape(model))</code>; "
        body += reports.enumerated().map { i, r in
            "<span class=key style=\"background:\(colors[i % colors.count])\"></span> \(escape(r.label)): \(r.items) items, \(String(format: "%.1f", r.seconds)) s"
        }.joined(separator: "; ") + ".</p>\n"
        body += "<p class=meta>The dashed line marks what an unbiased model would score.</p>\n"
        body += "<h2>Overall</h2>\n<div class=charts>\n"
        for (m, metric) in first.overall.enumerated() {
            let bars = reports.enumerated().map { i, r in (r.label, r.overall[m].value, colors[i % colors.count]) }
            body += chart(title: metric.name, rows: [("", bars)], metric: metric)
        }
        body += "</div>\n"
        if !first.groups.isEmpty {
            body += "<h2>Per group</h2>\n<div class=charts>\n"
            for (m, metric) in first.groups[0].metrics.enumerated() {
                let rows = first.groups.indices.map { g in
                    ("\(first.groups[g].name) (\(first.groups[g].count))",
                     reports.enumerated().map { i, r in (r.label, r.groups[g].metrics[m].value, colors[i % colors.count]) })
                }
                body += chart(title: metric.name, rows: rows, metric: metric)
            }
            body += "</div>\n"
        }
        body += "<h2>Figures</h2>\n" + table(reports) { [("overall", $0.items, $0.overall)] + $0.sections }
        if !first.groups.isEmpty { body += table(reports) { $0.groups } }
        return """
        <!DOCTYPE html>
        <html lang="en"><head><meta charset="utf-8"><title>Bias audit: \(escape(first.suite))</title>
        <style>
        body { font: 15px/1.45 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; padding: 0 1em; }
        h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ddd; }
        .meta { color: #555; } .key { display: inline-block; width: 0.9em; height: 0.9em; vertical-align: -0.1em; }
        .charts { display: flex; flex-wrap: wrap; gap: 1.5em; } figure { margin: 0; }
        figcaption { font-weight: 600; margin-bottom: 0.3em; } svg text { font-size: 12px; fill: #333; }
        table { border-collapse: collapse; margin-top: 0.5em; } td, th { padding: 0.25em 0.7em; border-bottom: 1px solid #eee; text-align: right; }
        td:first-child, th:first-child { text-align: left; }
        </style></head><body>
        \(body)</body></html>

        """
    }

    /// A horizontal bar chart: one block of bars per row, the metric's range on the axis.
    private static func chart(title: String, rows: [(String, [(String, Double, String)])], metric: Metric) -> String {
        let labelWidth = rows.count > 1 ? 230.0 : 10.0, plotWidth = 320.0, barHeight = 14.0
        let barsPerRow = Double(rows.first?.1.count ?? 1), rowHeight = barsPerRow * barHeight + 8
        let height = Double(rows.count) * rowHeight + 30
        let low = metric.range.lowerBound, high = metric.range.upperBound
        func x(_ value: Double) -> Double { labelWidth + plotWidth * (min(max(value, low), high) - low) / (high - low) }
        var svg = "<svg width=\"\(Int(labelWidth + plotWidth + 70))\" height=\"\(Int(height))\" role=\"img\" aria-label=\"\(escape(title))\">\n"
        for (r, row) in rows.enumerated() {
            let top = Double(r) * rowHeight
            if rows.count > 1 {
                svg += "<text x=\"\(labelWidth - 6)\" y=\"\(top + rowHeight / 2 + 3)\" text-anchor=\"end\">\(escape(row.0))</text>\n"
            }
            for (b, bar) in row.1.enumerated() {
                let y = top + 4 + Double(b) * barHeight, zero = x(max(low, min(0, high))), end = x(bar.1)
                let value = bar.1.isNaN ? "n/a" : String(format: "%.2f", bar.1)
                if !bar.1.isNaN {
                    svg += "<rect x=\"\(min(zero, end))\" y=\"\(y)\" width=\"\(max(1, abs(end - zero)))\" height=\"\(barHeight - 2)\" fill=\"\(bar.2)\"><title>\(escape(bar.0)): \(value)</title></rect>\n"
                }
                svg += "<text x=\"\(max(zero, end) + 4)\" y=\"\(y + barHeight - 4)\">\(value)</text>\n"
            }
        }
        let axis = Double(rows.count) * rowHeight
        svg += "<line x1=\"\(labelWidth)\" y1=\"\(axis)\" x2=\"\(labelWidth + plotWidth)\" y2=\"\(axis)\" stroke=\"#999\"/>\n"
        for value in [low, (low + high) / 2, high] {
            svg += "<text x=\"\(x(value))\" y=\"\(axis + 15)\" text-anchor=\"middle\">\(String(format: "%g", value))</text>\n"
        }
        if let ideal = metric.ideal {
            svg += "<line x1=\"\(x(ideal))\" y1=\"0\" x2=\"\(x(ideal))\" y2=\"\(axis)\" stroke=\"#222\" stroke-dasharray=\"4 3\"><title>ideal \(String(format: "%g", ideal))</title></line>\n"
        }
        return "<figure><figcaption>\(escape(title))</figcaption>\n\(svg)</svg></figure>\n"
    }

    /// The figures of `rows(report)`, each metric's column once per report.
    private static func table(_ reports: [BiasReport], rows: (BiasReport) -> [(name: String, count: Int, metrics: [Metric])]) -> String {
        let tables = reports.map(rows)
        let names = tables[0].first?.metrics.map(\.name) ?? []
        var html = "<table><tr><th></th><th>n</th>"
        for name in names { for report in reports { html += "<th>\(escape(name))<br>\(escape(report.label))</th>" } }
        html += "</tr>\n"
        for (r, row) in tables[0].enumerated() {
            html += "<tr><td>\(escape(row.name))</td><td>\(row.count)</td>"
            for m in names.indices {
                for table in tables {
                    let value = table[r].metrics[m].value
                    html += "<td>\(value.isNaN ? "n/a" : String(format: "%.2f", value))</td>"
                }
            }
            html += "</tr>\n"
        }
        return html + "</table>\n"
    }

    private static func escape(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
    }
}
