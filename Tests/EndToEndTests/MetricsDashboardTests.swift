import Foundation
import GPUPlaneTestSupport
import Testing

/// The Grafana dashboard (`deploy/grafana/gpuplane.json`) and the metrics docs/operations.md
/// documents, against what the daemons serve: the dashboard must be a valid dashboard on a
/// `${datasource}` Prometheus variable, and every metric its PromQL names, every label it
/// matches on and every metric the documentation lists (with its type and labels, under the
/// daemon that serves it) must be in a live local cluster's `/metrics` (api-server, scheduler,
/// both node-agents) after some work: a placement, a crashing container the agent restarts, a
/// refused listener request.
@Suite(.serialized, .timeLimit(.minutes(10))) struct MetricsDashboardTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    // MARK: The dashboard, read

    static func dashboard() throws -> [String: Any] {
        let data = try Data(contentsOf: root.appendingPathComponent("deploy/grafana/gpuplane.json"))
        return try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    }

    /// Every panel, rows' nested panels included.
    static func panels(of dashboard: [String: Any]) -> [[String: Any]] {
        let top = dashboard["panels"] as? [[String: Any]] ?? []
        return top + top.flatMap { $0["panels"] as? [[String: Any]] ?? [] }
    }

    /// Every PromQL expression of the panels, with the panel it is in.
    static func expressions(of dashboard: [String: Any]) -> [(panel: String, expr: String)] {
        panels(of: dashboard).flatMap { panel in
            (panel["targets"] as? [[String: Any]] ?? []).compactMap { target in
                (target["expr"] as? String).map { ("\(panel["title"] ?? "?")", $0) }
            }
        }
    }

    /// `label_values(METRIC, LABEL)` queries of the dashboard's variables.
    static func variableQueries(of dashboard: [String: Any]) -> [(variable: String, metric: String, label: String)] {
        let list = (dashboard["templating"] as? [String: Any])?["list"] as? [[String: Any]] ?? []
        return list.compactMap { variable in
            guard variable["type"] as? String == "query" else { return nil }
            let query = ((variable["query"] as? [String: Any])?["query"] as? String) ?? (variable["query"] as? String) ?? ""
            let parts = query.wholeMatch(of: /label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*,\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)/)
            return parts.map { ("\(variable["name"] ?? "?")", String($0.1), String($0.2)) }
        }
    }

    // MARK: PromQL, read far enough to find its metrics

    /// One vector selector of an expression: the metric, the labels it matches on, and the
    /// function it is the direct argument of (`rate`, `increase`…), if any.
    struct Selector: Equatable {
        var metric: String
        var labels: [String]
        var function: String?
    }

    /// What an expression holds that this reader does not know (a misspelt function or keyword
    /// reads as a metric that is not served, so it still fails).
    struct PromQLError: Error, CustomStringConvertible { var description: String }

    static let keywords: Set<String> = [
        "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "and", "or", "unless",
        "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk", "quantile",
    ]
    /// Keywords followed by a parenthesised list of label names.
    static let labelListKeywords: Set<String> = ["by", "without", "on", "ignoring", "group_left", "group_right"]

    /// The vector selectors of `expr`: identifiers that are neither a function (followed by `(`)
    /// nor a keyword, with their `{…}` matchers; string literals, `[range]`s, numbers and label
    /// lists after `by`/`on`/… are skipped.
    static func selectors(in expr: String) throws -> [Selector] {
        let characters = Array(expr)
        var index = 0
        var found: [Selector] = []
        var calls: [String?] = []  // the function of each open parenthesis
        var lastFunction: String?
        func isStart(_ c: Character) -> Bool { c.isASCII && (c.isLetter || c == "_" || c == ":") }
        func isPart(_ c: Character) -> Bool { isStart(c) || (c.isASCII && c.isNumber) }
        func skipSpaces() { while index < characters.count, characters[index].isWhitespace { index += 1 } }
        func skip(from open: Character, to close: Character) throws {
            let start = index
            var depth = 0
            while index < characters.count {
                let c = characters[index]
                if c == "\"" || c == "'" { try skipString() ; continue }
                if c == open { depth += 1 }
                if c == close { depth -= 1; if depth == 0 { index += 1; return } }
                index += 1
            }
            throw PromQLError(description: "unclosed \(open) at \(start) in \(expr)")
        }
        func skipString() throws {
            let quote = characters[index]
            let start = index
            index += 1
            while index < characters.count, characters[index] != quote {
                if characters[index] == "\\" { index += 1 }
                index += 1
            }
            guard index < characters.count else { throw PromQLError(description: "unclosed string at \(start) in \(expr)") }
            index += 1
        }
        while index < characters.count {
            let c = characters[index]
            if c == "\"" || c == "'" { try skipString(); continue }
            if c == "[" { try skip(from: "[", to: "]"); continue }
            if c == "(" { calls.append(lastFunction); lastFunction = nil; index += 1; continue }
            if c == ")" { _ = calls.popLast(); index += 1; continue }
            if c.isNumber || (c == "." && index + 1 < characters.count && characters[index + 1].isNumber) {
                while index < characters.count, characters[index].isNumber || characters[index].isLetter || characters[index] == "." { index += 1 }
                continue
            }
            if c == "{" {
                throw PromQLError(description: "a selector without a metric name at \(index) in \(expr)")
            }
            guard isStart(c) else { lastFunction = nil; index += 1; continue }
            let start = index
            while index < characters.count, isPart(characters[index]) { index += 1 }
            let word = String(characters[start..<index])
            skipSpaces()
            let next = index < characters.count ? characters[index] : " "
            if labelListKeywords.contains(word) {
                if next == "(" { try skip(from: "(", to: ")") }
                continue
            }
            if keywords.contains(word) { lastFunction = word; continue }
            if next == "(" { lastFunction = word; continue }
            var labels: [String] = []
            if next == "{" {
                let open = index
                try skip(from: "{", to: "}")
                let body = String(characters[(open + 1)..<(index - 1)])
                for match in body.matches(of: /([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"(?:[^"\\]|\\.)*"/) {
                    labels.append(String(match.1))
                }
            }
            // The function this selector is the direct argument of: the innermost open call
            // whose parenthesis comes right before it.
            var function: String?
            var back = start - 1
            while back >= 0, characters[back].isWhitespace { back -= 1 }
            if back >= 0, characters[back] == "(" { function = calls.last ?? nil }
            found.append(Selector(metric: word, labels: labels, function: function))
            lastFunction = nil
        }
        return found
    }

    // MARK: The exposition format, read

    /// What one `/metrics` answer serves: each sample name with the label names its series
    /// carry, and each metric family's `# TYPE`.
    struct Scrape {
        var samples: [String: Set<String>] = [:]
        var types: [String: String] = [:]

        init(_ text: String) {
            for line in text.split(separator: "\n").map(String.init) {
                if line.hasPrefix("# TYPE ") {
                    let parts = line.split(separator: " ")
                    if parts.count == 4 { types[String(parts[2])] = String(parts[3]) }
                    continue
                }
                guard !line.hasPrefix("#"), !line.isEmpty else { continue }
                let name = String(line.prefix { $0 != "{" && $0 != " " })
                var labels = samples[name] ?? []
                if let open = line.firstIndex(of: "{"), let close = line.lastIndex(of: "}") {
                    for match in line[line.index(after: open)..<close].matches(of: /([a-zA-Z_][a-zA-Z0-9_]*)="(?:[^"\\]|\\.)*"/) {
                        labels.insert(String(match.1))
                    }
                }
                samples[name] = labels
            }
        }

        mutating func merge(_ other: Scrape) {
            samples.merge(other.samples) { $0.union($1) }
            types.merge(other.types) { a, _ in a }
        }

        /// The family a sample name belongs to and its type (`x_bucket` of histogram `x`).
        func family(of sample: String) -> (name: String, type: String)? {
            if let type = types[sample] { return (sample, type) }
            for suffix in ["_bucket", "_sum", "_count"] where sample.hasSuffix(suffix) {
                let base = String(sample.dropLast(suffix.count))
                if let type = types[base], type == "histogram" || (type == "summary" && suffix != "_bucket") { return (base, type) }
            }
            return nil
        }

        /// The label names of a family's series, without the histogram's `le`.
        func labels(ofFamily name: String) -> Set<String> {
            var result = Set<String>()
            for (sample, labels) in samples where sample == name || family(of: sample)?.name == name {
                result.formUnion(labels)
            }
            result.remove("le")
            result.remove("quantile")
            return result
        }
    }

    // MARK: docs/operations.md's Metrics section, read

    /// One documented metric: the daemons of the section it is under, its type and its labels.
    struct Documented {
        var daemons: [String]
        var metric: String
        var type: String
        var labels: Set<String>
    }

    /// The `## Metrics` section of docs/operations.md.
    static func metricsSection() throws -> String {
        let text = try String(contentsOf: root.appendingPathComponent("docs/operations.md"), encoding: .utf8)
        let start = try #require(text.range(of: "\n## Metrics\n"), "docs/operations.md has no ## Metrics section")
        let rest = text[start.upperBound...]
        return String(rest[..<(rest.range(of: "\n## ")?.lowerBound ?? rest.endIndex)])
    }

    /// The table rows `| \`metric\` | type | labels | meaning |` under each `### <daemon>` heading
    /// (`### api-server and scheduler`: served by both).
    static func documented() throws -> [Documented] {
        var daemons: [String] = []
        var rows: [Documented] = []
        for line in try metricsSection().split(separator: "\n").map(String.init) {
            if line.hasPrefix("### ") {
                daemons = String(line.dropFirst(4)).replacingOccurrences(of: " and ", with: ", ").components(separatedBy: ", ")
                continue
            }
            guard line.hasPrefix("| `gpuplane_") else { continue }
            let cells = line.split(separator: "|", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
            guard cells.count >= 5 else { continue }
            let metric = cells[1].trimmingCharacters(in: CharacterSet(charactersIn: "`"))
            let labels = Set(cells[3].matches(of: /`([a-z_]+)`/).map { String($0.1) })
            rows.append(Documented(daemons: daemons, metric: metric, type: cells[2], labels: labels))
        }
        return rows
    }

    /// A JSON number that is a whole number, however JSONSerialization handed it over.
    static func int(_ value: Any?) -> Int? {
        switch value {
        case let value as Int: return value
        case let value as Double: return value.rounded() == value ? Int(value) : nil
        case let value as NSNumber: return value.intValue
        default: return nil
        }
    }

    // MARK: Tests

    @Test func theDashboardIsAGrafanaDashboardOnADatasourceVariable() throws {
        let dashboard = try Self.dashboard()
        let schema = try #require(Self.int(dashboard["schemaVersion"]))
        #expect((36...41).contains(schema), "schemaVersion \(schema)")
        #expect((dashboard["title"] as? String)?.isEmpty == false)
        #expect((dashboard["uid"] as? String).map { !$0.isEmpty && $0.count <= 40 } == true)
        let variables = (dashboard["templating"] as? [String: Any])?["list"] as? [[String: Any]] ?? []
        let datasource = variables.first { $0["type"] as? String == "datasource" }
        #expect(datasource?["name"] as? String == "datasource" && datasource?["query"] as? String == "prometheus",
                "a datasource variable named datasource of Prometheus sources")
        let defined = Set(variables.compactMap { $0["name"] as? String })

        let panels = Self.panels(of: dashboard)
        let ids = panels.compactMap { Self.int($0["id"]) }
        #expect(ids.count == panels.count, "every panel has an integer id")
        #expect(Set(ids).count == ids.count, "panel ids are unique: \(ids.sorted())")
        var graphs = 0
        for panel in panels {
            let title = "\(panel["title"] ?? "?")"
            let grid = (panel["gridPos"] as? [String: Any] ?? [:]).compactMapValues { Self.int($0) }
            #expect(["h", "w", "x", "y"].allSatisfy { grid[$0] != nil } && (grid["x"] ?? 0) + (grid["w"] ?? 0) <= 24, "\(title): gridPos \(grid)")
            guard panel["type"] as? String != "row" else { continue }
            graphs += 1
            let source = panel["datasource"] as? [String: Any]
            #expect(source?["uid"] as? String == "${datasource}" && source?["type"] as? String == "prometheus", "\(title): datasource \(String(describing: source))")
            let targets = panel["targets"] as? [[String: Any]] ?? []
            #expect(!targets.isEmpty, "\(title) has no query")
            #expect(Set(targets.compactMap { $0["refId"] as? String }).count == targets.count, "\(title): refIds are not unique")
            for target in targets {
                #expect((target["datasource"] as? [String: Any])?["uid"] as? String == "${datasource}", "\(title): a target's datasource")
                let expr = target["expr"] as? String ?? ""
                #expect(!expr.isEmpty, "\(title): an empty expression")
                let selectors = try Self.selectors(in: expr)
                #expect(selectors.contains { $0.metric.hasPrefix("gpuplane_") }, "\(title): \(expr) names no gpuplane metric")
                for variable in expr.matches(of: /\$\{?([a-zA-Z_][a-zA-Z0-9_]*)/).map({ String($0.1) }) where !variable.hasPrefix("__") {
                    #expect(defined.contains(variable), "\(title): \(expr) uses $\(variable), which the dashboard does not define")
                }
            }
        }
        #expect(graphs >= 15, "\(graphs) panels")

        // The reader finds what it should (so the live check below means something).
        #expect(try Self.selectors(in: #"histogram_quantile(0.99, sum by (le) (rate(a_bucket{x=~"$n", y!="b}"}[5m])))"#)
            == [Selector(metric: "a_bucket", labels: ["x", "y"], function: "rate")])
        #expect(try Self.selectors(in: "sum(b and on (instance) (c == 1)) / max without (gpu) (d offset 5m)").map(\.metric) == ["b", "c", "d"])
    }

    /// Every metric the documentation lists names a type and labels the way the code serves them,
    /// and every metric the dashboard uses is documented.
    @Test func theDashboardUsesOnlyDocumentedMetrics() throws {
        let documented = Set(try Self.documented().map(\.metric))
        #expect(documented.count >= 20, "\(documented.count) metrics documented")
        let dashboard = try Self.dashboard()
        for (panel, expr) in Self.expressions(of: dashboard) {
            for selector in try Self.selectors(in: expr) {
                let base = ["_bucket", "_sum", "_count"].first { selector.metric.hasSuffix($0) && documented.contains(String(selector.metric.dropLast($0.count))) }
                    .map { String(selector.metric.dropLast($0.count)) } ?? selector.metric
                #expect(documented.contains(base), "\(panel): \(selector.metric) is not in docs/operations.md's Metrics tables")
            }
        }
    }

    @Test(.enabled(if: PodmanFixture.isAvailable && EtcdFixture.isAvailable))
    func everyMetricTheDashboardAndTheDocsNameIsServed() async throws {
        let cluster = try await LocalCluster.start(binaries: LocalClusterTests.binaries)
        defer { cluster.shutdown() }
        // Some work: a container that keeps exiting (the agent restarts it), a request to an
        // agent's listener without the api-server's signature.
        let token = try await cluster.tenant("metrics", plan: "pro")
        let manifest = """
            application:
              name: crashy
              pods:
                - name: once
                  image: localhost/gpuplane-test-busybox:latest
                  machineType: S
                  command: ["sh", "-c", "sleep 1; exit 3"]
            """
        let applied = try await cluster.call("POST", "/v1/applications", token: token, body: manifest)
        #expect(applied.status == 201, "\(String(decoding: applied.body, as: UTF8.self))")
        var agents: [String] = []
        for node in [cluster.nodeName, LocalCluster.sharedNodeName] {
            let object = try await cluster.json("GET", "/v1/nodes/\(node)", token: cluster.adminToken)
            agents.append(try #require((object["spec"] as? [String: Any])?["agentURL"] as? String, "node \(node) has no agentURL"))
        }
        #expect(try await cluster.call(absolute: agents[0] + "/v1/logs/metrics/crashy.once").status == 401)

        func value(_ text: String, _ sample: String) -> Double {
            text.split(separator: "\n").compactMap { line -> Double? in
                guard line.hasPrefix(sample + " ") else { return nil }
                return Double(line.split(separator: " ").last ?? "")
            }.reduce(0, +)
        }
        var texts: [String: String] = [:]
        do {
            try await eventually("the scheduler bound the pod and an agent restarted its container", timeout: 120, every: 0.5) {
                texts["api-server"] = try await cluster.get(cluster.apiURL + "/metrics")
                texts["scheduler"] = try await cluster.get(cluster.schedulerURL + "/metrics")
                var agentText = ""
                for url in agents { agentText += try await cluster.get(url + "/metrics") + "\n" }
                texts["node-agent"] = agentText
                return value(texts["scheduler"] ?? "", "gpuplane_scheduler_bindings_total") >= 1
                    && value(agentText, "gpuplane_agent_container_restarts_total") >= 1
                    && value(agentText, "gpuplane_agent_listener_refused_total") >= 1
            }
        } catch {
            Issue.record("\(texts)\n\(cluster.logTails())")
            throw error
        }
        #expect(value(texts["scheduler"] ?? "", "gpuplane_scheduler_leader") == 1)
        #expect(value(texts["scheduler"] ?? "", "gpuplane_scheduler_pass_duration_seconds_count") >= 1)
        // The agent's status reports of the restarted container are read-modify-writes.
        let modifies = ["serializable", "linearizable"].map { value(texts["api-server"] ?? "", "gpuplane_store_modifies_total{read=\"\($0)\"}") }
        #expect(modifies.reduce(0, +) >= 1, "modifies by read: \(modifies)")

        var scrapes: [String: Scrape] = [:]
        var all = Scrape("")
        for (daemon, text) in texts {
            scrapes[daemon] = Scrape(text)
            all.merge(Scrape(text))
        }

        // The documentation: each metric under the daemon that serves it, with its type and labels.
        let documented = try Self.documented()
        for row in documented {
            #expect(!row.daemons.isEmpty, "docs/operations.md lists \(row.metric) under no daemon's heading")
            for daemon in row.daemons {
                guard let scrape = scrapes[daemon] else {
                    Issue.record("docs/operations.md lists \(row.metric) under '### \(daemon)', which is not a daemon (api-server, scheduler, node-agent)")
                    continue
                }
                guard let type = scrape.types[row.metric] else {
                    Issue.record("docs/operations.md lists \(row.metric) under \(daemon), whose /metrics does not serve it")
                    continue
                }
                #expect(type == row.type, "\(row.metric): documented as \(row.type), served by the \(daemon) as \(type)")
                #expect(scrape.labels(ofFamily: row.metric) == row.labels,
                        "\(row.metric): documented labels \(row.labels.sorted()), served by the \(daemon) with \(scrape.labels(ofFamily: row.metric).sorted())")
            }
        }
        // ... and nothing served that it does not list.
        let listed = Set(documented.flatMap { row in row.daemons.map { "\($0) \(row.metric)" } })
        for (daemon, scrape) in scrapes {
            for family in scrape.types.keys where family.hasPrefix("gpuplane_") {
                #expect(listed.contains("\(daemon) \(family)"), "\(daemon) serves \(family), which docs/operations.md does not list under ### \(daemon)")
            }
        }
        // The PromQL examples of the documentation name served metrics.
        let section = try Self.metricsSection()
        for match in section.matches(of: /gpuplane_[a-z0-9_]+/) {
            let name = String(match.0)
            #expect(all.samples[name] != nil || all.types[name] != nil, "docs/operations.md's Metrics section names \(name), which no daemon serves")
        }

        // The dashboard: every selector's metric is served, with the labels it matches on, and
        // rate()/increase() are taken of counters (or a histogram's parts) only.
        let dashboard = try Self.dashboard()
        let prometheusLabels: Set<String> = ["instance", "job"]
        for (panel, expr) in Self.expressions(of: dashboard) {
            for selector in try Self.selectors(in: expr) {
                guard let labels = all.samples[selector.metric], let family = all.family(of: selector.metric) else {
                    Issue.record("\(panel): \(expr) names \(selector.metric), which no daemon serves")
                    continue
                }
                for label in selector.labels {
                    #expect(labels.contains(label) || prometheusLabels.contains(label), "\(panel): \(selector.metric) has no label \(label)")
                }
                if let function = selector.function, ["rate", "irate", "increase"].contains(function) {
                    #expect(family.type == "counter" || family.type == "histogram" || family.type == "summary",
                            "\(panel): \(function)() of \(selector.metric), a \(family.type)")
                }
            }
        }
        for query in Self.variableQueries(of: dashboard) {
            #expect(all.samples[query.metric] != nil, "variable \(query.variable): \(query.metric) is not served")
            #expect(prometheusLabels.contains(query.label) || (all.samples[query.metric] ?? []).contains(query.label),
                    "variable \(query.variable): \(query.metric) has no label \(query.label)")
        }
        #expect(!Self.variableQueries(of: dashboard).isEmpty, "the node variable is read")
    }
}
