/// What a validation finding is about, so callers and tests decide on codes, never on text.
public enum DiagnosticCode: String, Codable, Sendable, CaseIterable {
    // Document-level problems, found while reading YAML or JSON.
    case syntax, documentTooLarge, tooDeep, aliasExpansion, invalidEncoding, emptyDocument
    case unknownDocument, missingField, typeMismatch, unknownField, invalidValue
    // The gpu block (reference/gpu-block-and-modes.txt).
    case gpuNotEnabled, unknownModel, invalidPriority, memoryGBRequired, memoryGBNotAllowed
    case memoryGBOutOfRange, gpuCountNotAllowed, gpuCountOutOfRange, planEntitlement
    // The antipattern table, one code a row.
    case modelAtPodRoot, gpuEnabledMissing, modelNameEnvVar, useGPUDeprecated
    // Pods.
    case invalidName, duplicateName, invalidImage, invalidPort, duplicatePort, invalidPath
    case invalidVar, reservedVar, unknownMachineType, machineTypeMismatch, noPods
    // Host access (privileged mode, host namespaces, host mounts, capabilities, devices).
    case hostAccessForbidden
    // Deployments (reference/custom-llm-deployments.txt).
    case invalidModelName, unknownGPUType, numGPUsOutOfRange, weightsDoNotFit
    case invalidBatchSize, invalidWeights, invalidInstances, gpuLimitExceeded
}

/// How bad a finding is. Warnings never fail validation.
public enum Severity: String, Codable, Sendable {
    case error, warning
}

/// One finding: where (a dotted path such as `application.pods[1].gpu.memoryGB`), what, and how
/// to fix it. The manifest reader adds the file, line and column.
public struct Diagnostic: Codable, Sendable, Hashable, CustomStringConvertible {
    /// Error or warning.
    public var severity: Severity
    /// The kind of finding.
    public var code: DiagnosticCode
    /// The dotted path of the field concerned.
    public var path: String
    /// What is wrong and how to write it instead.
    public var message: String
    /// The file, when read from one.
    public var file: String?
    /// 1-based line, when read from YAML or JSON.
    public var line: Int?
    /// 1-based column.
    public var column: Int?

    /// Makes an error.
    public init(_ code: DiagnosticCode, path: String, _ message: String) {
        self.init(.error, code, path: path, message)
    }

    /// Makes a diagnostic.
    public init(
        _ severity: Severity, _ code: DiagnosticCode, path: String, _ message: String,
        file: String? = nil, line: Int? = nil, column: Int? = nil
    ) {
        self.severity = severity
        self.code = code
        self.path = path
        self.message = message
        self.file = file
        self.line = line
        self.column = column
    }

    /// Compiler style: `app.yaml:12:7: error: application.pods[0].gpu: message`.
    public var description: String {
        var location = ""
        if let file { location += file + ":" }
        if let line {
            location += "\(line):"
            if let column { location += "\(column):" }
        }
        let prefix = location.isEmpty ? "" : location + " "
        let subject = path.isEmpty ? "" : path + ": "
        return "\(prefix)\(severity.rawValue): \(subject)\(message)"
    }
}

extension Array where Element == Diagnostic {
    /// Whether any finding is an error.
    public var hasErrors: Bool { contains { $0.severity == .error } }
    /// The errors only.
    public var errors: [Diagnostic] { filter { $0.severity == .error } }
}

/// Builds dotted paths: `application.pods[1].gpu.memoryGB`.
public struct FieldPath: Sendable, Hashable, CustomStringConvertible {
    /// The path so far.
    public let description: String

    /// A path starting at `root`.
    public init(_ root: String) { description = root }

    /// The path of a key below this one.
    public func key(_ key: String) -> FieldPath {
        FieldPath(description.isEmpty ? key : description + "." + key)
    }

    /// The path of an element below this one.
    public func index(_ index: Int) -> FieldPath { FieldPath(description + "[\(index)]") }

    /// `self.key(key)`.
    public subscript(key: String) -> FieldPath { self.key(key) }
    /// `self.index(index)`.
    public subscript(index: Int) -> FieldPath { self.index(index) }
}
