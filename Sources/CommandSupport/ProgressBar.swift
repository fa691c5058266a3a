import Foundation

/// A one-line progress bar with an ETA on stderr, redrawn in place on a terminal; elsewhere (a
/// log file, CI) a plain line every tenth of the way.
///
///     let bar = ProgressBar(unit: "items")
///     bar.update(done: 120, total: 1000)
///     bar.finish()
public final class ProgressBar {
    private let unit: String
    private let start = Date()
    private let interactive = isatty(STDERR_FILENO) != 0
    private var lastDecile = -1
    private var drawn = false

    public init(unit: String) { self.unit = unit }

    public func update(done: Int, total: Int) {
        let fraction = total > 0 ? Double(done) / Double(total) : 1
        let elapsed = Date().timeIntervalSince(start)
        let eta = done > 0 ? elapsed / Double(done) * Double(total - done) : 0
        let width = 30, filled = Int(fraction * Double(width))
        let bar = String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled)
        let line = String(format: "[%@] %d/%d %@  %@ elapsed, ETA %@", bar, done, total, unit,
                          Self.duration(elapsed), Self.duration(eta))
        if interactive {
            FileHandle.standardError.write(Data(("\r" + line + " ").utf8))
            drawn = true
        } else if Int(fraction * 10) > lastDecile {
            lastDecile = Int(fraction * 10)
            FileHandle.standardError.write(Data((line + "\n").utf8))
        }
    }

    /// Ends the bar's line.
    public func finish() {
        if drawn { FileHandle.standardError.write(Data("\n".utf8)) }
        drawn = false
    }

    static func duration(_ seconds: Double) -> String {
        let s = Int(seconds.rounded())
        return s >= 3600 ? String(format: "%dh%02dm", s / 3600, s % 3600 / 60) : s >= 60 ? String(format: "%dm%02ds", s / 60, s % 60) : "\(s)s"
    }
}
