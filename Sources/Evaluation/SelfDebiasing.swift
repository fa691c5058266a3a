import Foundation
import Generation
import Kernels
import CKernels
import Transformer

extension SelfDebiasing {
    /// The continuations' scores, as `LoglikelihoodScorer.score` gives them, with every
    /// continuation token's probability debiased. `prefixes(group)` may choose the prefixes per
    /// group (by bias type); the default is `self.prefixes`.
    public func score(_ groups: [ScoringGroup], scorer: LoglikelihoodScorer, prefixes choose: ((Int) -> [String])? = nil,
                      progress: ((Int, Int) -> Void)? = nil) throws -> [[ContinuationScore]] {
        let model = scorer.model, V = model.config.vocabularySize
        let workspace = InferenceWorkspace(pool: model.pool)
        var results: [[ContinuationScore]] = groups.map { _ in [] }
        // One job per continuation: its plain tokens, scored from where its context ends.
        var jobs: [(group: Int, tokens: [Int], contextLength: Int, prefixes: [[Int]])] = []
        for (index, group) in groups.enumerated() {
            let prefixTokens = (choose?(index) ?? prefixes).map { scorer.tokenizer.encode($0) }
            for plan in scorer.plan(group) {
                for (sequence, contextLength) in zip(plan.sequences, plan.contextLengths) {
                    jobs.append((index, sequence, contextLength, prefixTokens))
                }
            }
        }
        let rowBudget = 256
        // The KV positions of the largest step: every copy's tokens and a partly filled block each.
        let positions = jobs.map { job in job.prefixes.reduce(job.tokens.count + 16) { $0 + $1.count + job.tokens.count + 16 } }
        let positionBudget = max(4096, positions.max() ?? 0)
        let pool = try KVBlockPool(config: model.config, budget: .tokens(positionBudget))
        let largest = jobs.map { 1 + $0.prefixes.count }.max() ?? 1
        let scratch = UnsafeMutableBufferPointer<Float>.allocate(capacity: largest * V)
        defer { scratch.deallocate() }
        var next = 0
        while next < jobs.count {
            var end = next, rows = 0, used = 0
            while end < jobs.count {
                let job = jobs[end], r = (job.tokens.count - job.contextLength) * (1 + job.prefixes.count)
                if end > next, rows + r > rowBudget || used + positions[end] > positionBudget { break }
                rows += r
                used += positions[end]
                end += 1
            }
            var entries: [BatchEntry] = []
            for job in jobs[next..<end] {
                let scored = job.tokens.count - job.contextLength
                // An empty context starts from the end-of-text token, which a prefix replaces.
                let body = job.contextLength == 1 && job.tokens[0] == scorer.prefixToken ? Array(job.tokens.dropFirst()) : job.tokens
                for tokens in [job.tokens] + job.prefixes.map({ $0 + body }) {
                    let input = Array(tokens.suffix(scorer.window + 1).dropLast())
                    entries.append(BatchEntry(cache: KVCache(pool: pool, capacity: scorer.window + 1), tokens: input, logits: .lastRows(scored)))
                }
            }
            let result = try model.forward(batch: entries, workspace: workspace)
            var entry = 0
            for job in jobs[next..<end] {
                let scored = job.tokens.count - job.contextLength
                var logProbabilities: [Float] = [], greedy: [Bool] = []
                let copies = 1 + job.prefixes.count
                for row in 0..<scored {
                    for copy in 0..<copies {
                        let logits = result.logits(entry: entry + copy, row: row)
                        (scratch.baseAddress! + copy * V).update(from: logits.baseAddress!, count: V)
                    }
                    let total = reweigh(UnsafeMutableBufferPointer(rebasing: scratch[0..<(copies * V)]), vocabulary: V)
                    let weight = scratch[job.tokens[job.contextLength + row]]
                    logProbabilities.append(log(weight / total))
                    greedy.append(weight >= sg_max(V, scratch.baseAddress!))
                }
                results[job.group].append(ContinuationScore(tokens: job.tokens, contextLength: job.contextLength,
                                                            scoredFrom: job.contextLength, logProbabilities: logProbabilities,
                                                            greedy: greedy))
                entry += 1 + job.prefixes.count
            }
            next = end
            progress?(jobs[next - 1].group + 1, groups.count)  // jobs are in group order
        }
        return results
    }
}
