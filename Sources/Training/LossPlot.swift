import Foundation

/// A loss curve as a standalone SVG: training loss as a line, validation loss as dots, with
/// labelled axes. Opens in any browser.
public enum LossPlot {
    public static func svg(train: [(step: Int, loss: Float)], validation: [(step: Int, loss: Float)],
                           title: String = "loss") -> String {
        let width = 720.0, height = 420.0, left = 60.0, right = 20.0, top = 40.0, bottom = 50.0
        let all = train.map(\.loss) + validation.map(\.loss)
        let maxStep = Double(max(1, (train.map(\.step) + validation.map(\.step)).max() ?? 1))
        var low = Double(all.min() ?? 0), high = Double(all.max() ?? 1)
        if high - low < 1e-6 { high = low + 1 }
        let pad = (high - low) * 0.05
        low -= pad
        high += pad
        func x(_ step: Int) -> Double { left + Double(step) / maxStep * (width - left - right) }
        func y(_ loss: Float) -> Double { top + (high - Double(loss)) / (high - low) * (height - top - bottom) }
        var svg = """
        <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" font-family="sans-serif" font-size="12">
        <rect width="100%" height="100%" fill="white"/>
        <text x="\(width / 2)" y="24" text-anchor="middle" font-size="15">\(escape(title))</text>

        """
        for i in 0...5 {
            let value = low + (high - low) * Double(i) / 5
            let yy = y(Float(value))
            svg += "<line x1=\"\(left)\" y1=\"\(yy)\" x2=\"\(width - right)\" y2=\"\(yy)\" stroke=\"#eee\"/>"
            svg += "<text x=\"\(left - 6)\" y=\"\(yy + 4)\" text-anchor=\"end\">\(String(format: "%.2f", value))</text>\n"
            let step = Int(maxStep * Double(i) / 5)
            svg += "<text x=\"\(x(step))\" y=\"\(height - bottom + 18)\" text-anchor=\"middle\">\(step)</text>\n"
        }
        svg += "<line x1=\"\(left)\" y1=\"\(height - bottom)\" x2=\"\(width - right)\" y2=\"\(height - bottom)\" stroke=\"black\"/>"
        svg += "<line x1=\"\(left)\" y1=\"\(top)\" x2=\"\(left)\" y2=\"\(height - bottom)\" stroke=\"black\"/>\n"
        svg += "<text x=\"\(width / 2)\" y=\"\(height - 12)\" text-anchor=\"middle\">step</text>\n"
        if !train.isEmpty {
            let points = train.map { String(format: "%.1f,%.1f", x($0.step), y($0.loss)) }.joined(separator: " ")
            svg += "<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.5\" points=\"\(points)\"/>\n"
        }
        for point in validation {
            svg += String(format: "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3.5\" fill=\"#d62728\"/>\n", x(point.step), y(point.loss))
        }
        svg += "<line x1=\"\(width - 190)\" y1=\"\(top + 6)\" x2=\"\(width - 165)\" y2=\"\(top + 6)\" stroke=\"#1f77b4\" stroke-width=\"2\"/>"
        svg += "<text x=\"\(width - 160)\" y=\"\(top + 10)\">train</text>"
        svg += "<circle cx=\"\(width - 100)\" cy=\"\(top + 6)\" r=\"3.5\" fill=\"#d62728\"/>"
        svg += "<text x=\"\(width - 90)\" y=\"\(top + 10)\">validation</text>\n</svg>\n"
        return svg
    }

    private static func escape(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;")
    }
}
