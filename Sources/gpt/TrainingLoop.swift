import Foundation
import SwiftGPT

/// The loop `gpt train` and `gpt finetune` share: a step at a time with a progress line (loss,
/// learning rate, gradient norm, tokens/s, ETA), metrics.jsonl, validation lines with
/// `report`'s extra text, periodic checkpoints, and Ctrl-C saving the run for --resume.
/// Returns false when interrupted (the run is saved).
func runTraining(_ trainer: Trainer, out: URL, report validationNote: ((Int) throws -> String)? = nil) throws -> Bool {
    let options = trainer.options
    do {
        try FileManager.default.createDirectory(at: out, withIntermediateDirectories: true)
    } catch {
        throw ModelError("\(out.path): cannot create the directory (\((error as NSError).localizedDescription))")
    }
    let interrupted = InterruptFlag()
    let metrics = try MetricsLog(url: out.appendingPathComponent("metrics.jsonl"), truncateAfter: trainer.step)
    let startStep = trainer.step
    let started = Date()
    var recent: [Double] = []
    while trainer.step < options.steps {
        let report = try trainer.trainStep()
        try metrics.append(report)
        recent.append(report.tokensPerSecond)
        if recent.count > 20 { recent.removeFirst() }
        let tokensPerSecond = recent.reduce(0, +) / Double(recent.count)
        let secondsPerStep = Date().timeIntervalSince(started) / Double(trainer.step - startStep)
        let eta = secondsPerStep * Double(options.steps - trainer.step)
        var line = String(format: "step %d/%d | loss %.4f | lr %.2e | norm %.2f | %.0f tok/s | ETA %@",
                          report.step, options.steps, report.trainLoss, report.learningRate, report.gradientNorm,
                          tokensPerSecond, formatDuration(eta))
        if let validationLoss = report.validationLoss {
            line += String(format: " | val %.4f", validationLoss)
            FileHandle.standardError.write(Data("\r\(line)\n".utf8))
            if let validationNote { FileHandle.standardError.write(Data("  \(try validationNote(report.step))\n".utf8)) }
        } else {
            FileHandle.standardError.write(Data("\r\(line)   ".utf8))
        }
        let periodic = options.checkpointInterval > 0 && trainer.step % options.checkpointInterval == 0
        if periodic || interrupted.isSet {
            try saveRun(trainer, to: out)
        }
        if interrupted.isSet {
            FileHandle.standardError.write(Data("\ninterrupted: saved step \(trainer.step) to \(out.path); continue with --resume\n".utf8))
            return false
        }
    }
    let training = peakResidentBytes()
    try saveRun(trainer, to: out)
    let steps = trainer.history.map(\.elapsed)
    if let training, let peak = peakResidentBytes(), !steps.isEmpty {
        FileHandle.standardError.write(Data(String(
            format: "\npeak memory (RSS): %.0f MB while training, %.0f MB with the final save; %.2f s per step (mean of %d, validation excluded)\n",
            Double(training) / 1e6, Double(peak) / 1e6, steps.reduce(0, +) / Double(steps.count), steps.count).utf8))
    }
    return true
}

/// The process's peak resident memory (Linux: VmHWM in /proc/self/status), in bytes.
func peakResidentBytes() -> Int? {
    guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
          let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
          let kilobytes = Int(line.split(separator: " ").dropFirst().first ?? "") else { return nil }
    return kilobytes * 1024
}

/// The trainer's checkpoint and the loss plot from metrics.jsonl.
func saveRun(_ trainer: Trainer, to directory: URL) throws {
    try trainer.save(to: directory)
    let history = try MetricsLog.read(directory.appendingPathComponent("metrics.jsonl"))
    let svg = LossPlot.svg(train: history.train, validation: history.validation, title: "training loss: \(directory.lastPathComponent)")
    try Data(svg.utf8).write(to: directory.appendingPathComponent("loss.svg"), options: .atomic)
}
