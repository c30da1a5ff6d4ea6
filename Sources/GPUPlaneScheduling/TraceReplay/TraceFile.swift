#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import GPUPlaneSystem

/// A line of a trace file that could not be read: the file, the line (1 = the header), the
/// column (1-based, with its header name) and what is wrong with the value.
public struct TraceFileError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What went wrong, for code to decide on (never match the text).
    public enum Code: String, Sendable, Hashable {
        /// A column the format needs is missing from the header.
        case missingColumn
        /// A row has fewer fields than the header.
        case missingField
        /// A field is not a whole number, or is out of range.
        case badNumber
        /// A GPU model (node `model`, task `gpu_spec`) is not one the replay knows.
        case unknownGPUModel
        /// The fields of a row contradict each other (e.g. a GPU-sharing task asking for 2 GPUs).
        case inconsistent
        /// The file has no rows.
        case empty
        /// The file could not be read (missing, unreadable, not UTF-8).
        case unreadable
    }

    /// The code.
    public let code: Code
    /// The file as given.
    public let file: String
    /// The line, 1-based (the header is line 1); 0 when the file itself could not be read.
    public let line: Int
    /// The column, 1-based; 0 when the error is the whole line's.
    public let column: Int
    /// The column's header name, when known.
    public let columnName: String?
    /// What is wrong and how to fix it.
    public let message: String

    public var description: String {
        let place = column > 0 ? "\(file):\(line):\(column) (\(columnName ?? "?"))" : line > 0 ? "\(file):\(line)" : file
        return "\(place): \(message)"
    }
}

/// A GPU node of a trace's node list (`sn,cpu_milli,memory_mib,gpu,model`).
public struct TraceNode: Sendable, Hashable {
    /// The node's name (`sn`).
    public var name: String
    /// CPU, thousandths of a core.
    public var cpuMilli: Int
    /// Memory, MiB.
    public var memoryMiB: Int
    /// GPUs.
    public var gpus: Int
    /// The trace's GPU model (`P100`, `T4`, `V100M16`, `V100M32`, `A10`, `G1`, `G2`, `G3`); empty without GPUs.
    public var model: String
}

/// A task of a trace's pod list (`name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,…`).
public struct TraceTask: Sendable, Hashable {
    /// The task's name.
    public var name: String
    /// CPU, thousandths of a core.
    public var cpuMilli: Int
    /// Memory, MiB.
    public var memoryMiB: Int
    /// GPUs (0 for a CPU task).
    public var gpus: Int
    /// Thousandths of each GPU: below 1000 for a GPU-sharing task (then `gpus` is 1).
    public var gpuMilli: Int
    /// GPU models allowed (`gpu_spec`, `|`-separated); empty means any.
    public var gpuSpec: [String]

    /// Whether it takes a share of one GPU.
    public var isSharing: Bool { gpus == 1 && gpuMilli < 1000 }
    /// GPUs it demands, shares counted as fractions.
    public var gpuDemand: Double { Double(gpus) * Double(gpuMilli) / 1000 }
}

/// Reads the Alibaba GPU trace's CSV files (cluster-trace-gpu-v2023), or any file with the same
/// columns (extra columns are ignored; columns may come in any order).
public enum TraceFile {
    /// The node list's columns.
    public static let nodeColumns = ["sn", "cpu_milli", "memory_mib", "gpu", "model"]
    /// The pod list's columns the replay reads.
    public static let taskColumns = ["name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli", "gpu_spec"]

    /// Reads a node list from `path`.
    public static func nodes(at path: String, knownModels: Set<String>) throws(TraceFileError) -> [TraceNode] {
        try nodes(csv: read(path), file: path, knownModels: knownModels)
    }

    /// Reads a pod list from `path`.
    public static func tasks(at path: String, knownModels: Set<String>) throws(TraceFileError) -> [TraceTask] {
        try tasks(csv: read(path), file: path, knownModels: knownModels)
    }

    private static func read(_ path: String) throws(TraceFileError) -> String {
        guard FileManager.default.isReadableFile(atPath: path) else {
            throw TraceFileError(code: .unreadable, file: path, line: 0, column: 0, columnName: nil,
                                 message: "no readable file here; give the trace's CSV with --nodes/--pods")
        }
        guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8) else {
            throw TraceFileError(code: .unreadable, file: path, line: 0, column: 0, columnName: nil,
                                 message: "could not be read as UTF-8 text")
        }
        return text
    }

    /// Parses a node list; `file` names it in errors.
    public static func nodes(csv: String, file: String, knownModels: Set<String>) throws(TraceFileError) -> [TraceNode] {
        let table = try Table(csv: csv, file: file, required: nodeColumns)
        var nodes: [TraceNode] = []
        for row in table.rows {
            let gpus = try row.int("gpu", in: 0...64)
            var model = try row.string("model")
            if gpus == 0 {
                model = ""
            } else if !knownModels.contains(model) {
                throw row.error(.unknownGPUModel, "model",
                                "unknown GPU model '\(model)'; known: \(knownModels.sorted().joined(separator: ", "))")
            }
            nodes.append(TraceNode(
                name: try row.string("sn", nonEmpty: true), cpuMilli: try row.int("cpu_milli", in: 0...100_000_000),
                memoryMiB: try row.int("memory_mib", in: 0...1 << 40), gpus: gpus, model: model))
        }
        return nodes
    }

    /// Parses a pod list; `file` names it in errors.
    public static func tasks(csv: String, file: String, knownModels: Set<String>) throws(TraceFileError) -> [TraceTask] {
        let table = try Table(csv: csv, file: file, required: taskColumns)
        var tasks: [TraceTask] = []
        for row in table.rows {
            let gpus = try row.int("num_gpu", in: 0...64)
            let milli = try row.int("gpu_milli", in: 0...1000)
            if gpus > 0 && milli == 0 {
                throw row.error(.inconsistent, "gpu_milli", "a task with num_gpu \(gpus) needs gpu_milli 1…1000, not 0")
            }
            if gpus > 1 && milli < 1000 {
                throw row.error(.inconsistent, "gpu_milli",
                                "a task of \(gpus) GPUs takes them whole: gpu_milli must be 1000, not \(milli)")
            }
            let specText = try row.string("gpu_spec")
            let spec = specText.isEmpty ? [] : specText.split(separator: "|").map { String($0) }
            for model in spec where !knownModels.contains(model) {
                throw row.error(.unknownGPUModel, "gpu_spec",
                                "unknown GPU model '\(model)'; known: \(knownModels.sorted().joined(separator: ", "))")
            }
            tasks.append(TraceTask(
                name: try row.string("name", nonEmpty: true), cpuMilli: try row.int("cpu_milli", in: 0...100_000_000),
                memoryMiB: try row.int("memory_mib", in: 0...1 << 40), gpus: gpus, gpuMilli: gpus == 0 ? 0 : milli,
                gpuSpec: spec))
        }
        return tasks
    }

    /// A CSV file split into header and rows (no quoting: the trace has none).
    struct Table {
        let file: String
        let header: [String]
        let index: [String: Int]
        let rows: [Row]

        init(csv: String, file: String, required: [String]) throws(TraceFileError) {
            self.file = file
            // "\r\n" is one Character in Swift: split on either.
            var lines = csv.split(omittingEmptySubsequences: false) { $0 == "\n" || $0 == "\r\n" }
            while let last = lines.last, last.allSatisfy({ $0 == " " }) { lines.removeLast() }
            guard let first = lines.first else {
                throw TraceFileError(code: .empty, file: file, line: 1, column: 0, columnName: nil,
                                     message: "the file is empty; expected a header with \(required.joined(separator: ","))")
            }
            header = first.split(separator: ",", omittingEmptySubsequences: false).map {
                $0.trimmingWhitespace()
            }
            var index: [String: Int] = [:]
            for (i, name) in header.enumerated() where index[name] == nil { index[name] = i }
            self.index = index
            for name in required where index[name] == nil {
                throw TraceFileError(code: .missingColumn, file: file, line: 1, column: 0, columnName: name,
                                     message: "the header has no column '\(name)'; it needs \(required.joined(separator: ","))")
            }
            var rows: [Row] = []
            for (offset, line) in lines.enumerated().dropFirst() where !line.isEmpty {
                let fields = line.split(separator: ",", omittingEmptySubsequences: false).map {
                    String($0).trimmingWhitespace()
                }
                rows.append(Row(file: file, line: offset + 1, header: header, index: index, fields: fields))
            }
            guard !rows.isEmpty else {
                throw TraceFileError(code: .empty, file: file, line: 2, column: 0, columnName: nil,
                                     message: "the file has a header but no rows")
            }
            self.rows = rows
        }
    }

    /// One row, read by column name.
    struct Row {
        let file: String
        let line: Int
        let header: [String]
        let index: [String: Int]
        let fields: [String]

        func error(_ code: TraceFileError.Code, _ column: String, _ message: String) -> TraceFileError {
            let i = index[column] ?? -1
            return TraceFileError(code: code, file: file, line: line, column: i + 1, columnName: column, message: message)
        }

        func string(_ column: String, nonEmpty: Bool = false) throws(TraceFileError) -> String {
            guard let i = index[column], i < fields.count else {
                throw error(.missingField, column, "the row has \(fields.count) fields; the header has \(header.count)")
            }
            if nonEmpty && fields[i].isEmpty { throw error(.missingField, column, "\(column) is empty") }
            return fields[i]
        }

        func int(_ column: String, in range: ClosedRange<Int>) throws(TraceFileError) -> Int {
            let text = try string(column)
            guard let value = Int(text) else {
                throw error(.badNumber, column, "'\(text)' is not a whole number")
            }
            guard range.contains(value) else {
                throw error(.badNumber, column, "\(value) is out of range \(range.lowerBound)…\(range.upperBound)")
            }
            return value
        }
    }
}
